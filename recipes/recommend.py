"""Recommend for a JSON lines file of histories with a trained checkpoint.

    python recipes/recommend.py --checkpoint outputs/stage3 --input histories.jsonl \
        --output recs.jsonl --top_k 10 --dataset ml-100k

Each input line is `{"history": [item ids, oldest first], ...}`; each output line is that
object with `line`, `items`, `titles` (with `--dataset`), `scores` and `depth` added. A line
with an item id the checkpoint does not know stops the run, naming the line, or with
`--on_unknown skip` is reported and skipped. The output is written atomically, and an
existing one is refused unless `--overwrite`.
"""

from trl import TrlParser

from lasar_trl.stages import recommend

if __name__ == "__main__":
    (args,) = TrlParser(recommend.RecommendArguments).parse_args_and_config()
    recommend.run(args)
