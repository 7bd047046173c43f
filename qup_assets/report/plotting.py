"""What every report plot shares: the PNG writer and the markers per objective (matplotlib, Agg)."""

from __future__ import annotations

import io

OBJ_MARKERS = {"sft": "o", "dft": "s"}


def png(fig) -> bytes:
    """A finished figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
