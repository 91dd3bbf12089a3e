"""Build the Semantic ID map of a dataset and save it for training and evaluation.

    python recipes/build_sids.py --dataset ml-100k --output_dir outputs/sids/ml-100k
    python recipes/build_sids.py --dataset letter:DATA/beauty_p5_letter --output_dir DIR --use_shipped_sids
    python recipes/build_sids.py --dataset ml-100k --output_dir DIR --kmeans balanced --codebook_size auto

Writes DIR/sid_map.json (item id -> SID string) and DIR/sid_stats.json, and prints the stats.
"""

from trl import TrlParser

from lasar_trl.stages import build_sids

if __name__ == "__main__":
    (args,) = TrlParser(build_sids.BuildSidsArguments).parse_args_and_config()
    build_sids.run(args)
