"""Evaluate a recommender checkpoint with SID-constrained beam search.

    python recipes/evaluate.py --checkpoint outputs/stage1 --dataset ml-100k \
        --exclude_history --output_json outputs/stage1/eval.json

Prints HR/NDCG@{1,5,10,20} next to a most-popular baseline computed by the
same code on the same requests, and writes the JSON. A LASAR checkpoint reasons
for its own depth (Policy Head argmax, or its fixed depth); `--depth N` forces N.
"""

from trl import TrlParser

from lasar_trl.stages import evaluate

if __name__ == "__main__":
    (args,) = TrlParser(evaluate.EvaluateArguments).parse_args_and_config()
    evaluate.run(args)
