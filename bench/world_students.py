"""Do the synthetic world's students reason? Their right answers should rest on right work, as a real student's do.

For each shipped student of a study (data/world/<study>/students), on fresh problems drawn like each of the
study's benchmarks (never the benchmark items themselves), `--samples` samples per problem at the study's
sampling temperature: accuracy; the share of correct samples with a wrong step (checked against the problem's
program: ProcessBench found 3.5% on GSM8K, arXiv 2412.06559); how many distinct correct texts a solved problem
has; and where the steps go wrong (arithmetic a OP b != r, a value not carried from the step before, an
operand or operation that is not the story's). What the issue asks of the default world: accuracy 20-45%, at
most 15% of correct samples with a wrong step, at least 3 distinct correct texts per solved problem.

Run (no store needed; ~1 min per student on 2 cores):
  .venv/bin/python bench/world_students.py --study tiny
"""

import argparse
from collections import Counter
from fractions import Fraction


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default="tiny")
    ap.add_argument("--problems", type=int, default=60, help="fresh problems per benchmark")
    ap.add_argument("--samples", type=int, default=8)
    args = ap.parse_args()

    from qup_assets.backends.base import Request, SamplingParams
    from qup_assets.backends.prompting import render_prompt
    from qup_assets.backends.transformers_backend import TransformersBackend
    from qup_assets.mathcore.extract import extract_answer
    from qup_assets.oracle.symbolic import compute, parse_steps
    from qup_assets.study import REPO_ROOT, load_study
    from qup_assets.world.generator import generate

    s = load_study(args.study)
    n = args.samples
    print(f"| family | benchmark | accuracy | correct samples with a wrong step | distinct correct texts per solved "
          f"problem | steps: arithmetic wrong | not carried | not the story's |")
    print("|---|---|---|---|---|---|---|---|")
    for fam in s.families:
        lm = TransformersBackend(REPO_ROOT / "data" / "world" / s.name / "students" / fam / "model")
        for b in s.benchmarks:
            src = b.source
            problems = generate(args.problems, 7_000_000 + src.seed, min_steps=src.min_steps, max_steps=src.max_steps,
                                max_operand=src.max_operand)
            prompts = [render_prompt(lm.tokenizer, s.families[fam].prompt, p.problem) for p in problems]
            outs = lm.sample([Request(pr, i) for pr in prompts for i in range(n)],
                             SamplingParams(temperature=s.sampling.temperature, max_tokens=s.sampling.max_tokens))
            c = Counter()
            distinct = []
            for j, p in enumerate(problems):
                values = p.program.values()
                truth = [(Fraction(a), st.op, Fraction(st.arg), Fraction(r)) for st, a, r in zip(p.program.steps, values, values[1:])]
                right_texts = set()
                for o in outs[j * n:(j + 1) * n]:
                    steps = parse_steps(o.text)
                    prev = Fraction(p.program.start)
                    for i, x in enumerate(steps):
                        c["steps"] += 1
                        c["arith"] += compute(x.a, x.op, x.b) != x.r
                        c["carry"] += x.a != prev
                        c["story"] += i < len(truth) and (x.op, x.b) != truth[i][1:3]
                        prev = x.r
                    if extract_answer(o.text).answer == p.answer:
                        c["right"] += 1
                        c["right_wrong_step"] += [(x.a, x.op, x.b, x.r) for x in steps] != truth
                        right_texts.add(o.text)
                if right_texts:
                    distinct.append(len(right_texts))
            pct = lambda a, b: f"{100 * a / max(1, b):.1f}%"  # noqa: E731
            print(f"| {fam} | {b.name} | {pct(c['right'], len(outs))} | {pct(c['right_wrong_step'], c['right'])} "
                  f"| {sum(distinct) / max(1, len(distinct)):.2f} ({len(distinct)} solved) | {pct(c['arith'], c['steps'])} "
                  f"| {pct(c['carry'], c['steps'])} | {pct(c['story'], c['steps'])} |", flush=True)


if __name__ == "__main__":
    main()
