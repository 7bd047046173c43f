"""`qup run`'s work: decide what is out of date, launch it in three waves through the run queue, follow it.

The waves: the shared assets (one run), then every family's partition (one run each, all queued at once:
the instance's run queue decides how many go together), then the report (once the families changed it).
"""

from contextlib import ExitStack
from pathlib import Path

import dagster as dg

from qup_assets.assets.jobs import FAMILY_JOB, REPORT_JOB, SHARED_JOB
from qup_assets.assets.report import LAUNCHED_BY_QUP
from qup_assets.orchestration.daemon import running_daemon
from qup_assets.orchestration.runs import Launch, code_location, follow, submit
from qup_assets.orchestration.stages import split_stages
from qup_assets.orchestration.staleness import why_outdated
from qup_assets.study import Study


class StudyRun:
    def __init__(self, study: Study, instance, home: Path, graph, out=print, err=print):
        self.study, self.instance, self.home, self.graph = study, instance, home, graph
        self.out, self.err = out, err
        self.ran = False

    def todo(self, keys, partition=None, force=False) -> list:
        """The keys to materialize (all with force), saying how many are skipped and why the others are not."""
        if force or not keys:
            return list(keys)
        why = why_outdated(self.graph, self.instance, keys, partition)
        where = f" [{partition}]" if partition else ""
        if len(keys) > len(why):
            self.out(f"== up to date, skipped: {len(keys) - len(why)} asset(s){where}")
        if why:
            first, reason = next(iter(why.items()))
            more = f" and {len(why) - 1} more" if len(why) > 1 else ""
            self.out(f"== out of date{where}: {first.to_user_string()} ({reason}){more}")
        return list(why)

    def run(self, keys, families: list[str], force: bool = False) -> bool:
        """Materialize what is out of date among `keys` for `families`; True when every run succeeded."""
        stages = split_stages(self.graph, keys)
        waves = [[Launch("shared", SHARED_JOB, self.todo(stages.shared, force=force))]]
        if stages.family:
            waves.append([Launch(f, FAMILY_JOB, self.todo(stages.family, f, force), f) for f in families])
        # The report is decided once the families ran (they change it); with nothing else to do, now.
        report = None if any(w.keys for wave in waves for w in wave) else self.todo(stages.after, force=force)
        if report == []:
            return True
        ok = True
        with ExitStack() as stack:
            location = None
            for i, wave in enumerate([*waves, None]):
                if wave is None:
                    keys_after = report if report is not None else self.todo(stages.after, force=force)
                    wave = [Launch("report", REPORT_JOB, keys_after)] if ok else []
                wave = [w for w in wave if w.keys]
                if not wave:
                    continue
                if location is None:
                    stack.enter_context(running_daemon(self.study, self.instance, self.home, log=self.out))
                    location = stack.enter_context(code_location(self.study, self.instance))
                ok = self._wave(location, wave) and ok
                if not ok and i == 0:
                    break  # without the shared assets no family can run
        return ok

    def _wave(self, location, wave: list[Launch]) -> bool:
        self.ran = True
        tags = {"qup/study": self.study.name, **LAUNCHED_BY_QUP}
        runs = {}
        for w in wave:
            runs[submit(self.instance, location, w, tags)] = w.label
            self.out(f"== queued {w.label}: {len(w.keys)} asset(s)")
        status = follow(self.instance, runs, out=self.out, err=self.err)
        failed = [runs[r] for r, s in status.items() if s != dg.DagsterRunStatus.SUCCESS]
        for label in failed:
            self.err(f"== {'family ' if label in self.study.families else ''}{label} FAILED")
        return not failed
