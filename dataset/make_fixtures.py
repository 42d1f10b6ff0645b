"""Generate the small synthetic datasets used by the tests (committed output, no real data).

    python dataset/make_fixtures.py        # writes dataset/tiny-synth/tiny-synth.{inter,item}

Titles mix ASCII and non-ASCII text, one item has no title (placeholder path) and one has a very
long title (truncation path). Interactions follow a seeded Markov chain over item "genres", so a
sequential model has something to learn.
"""

import os
import random

NAME = "tiny-synth"
N_USERS = 60
N_ITEMS = 40
WORDS = ["Star", "Café", "Noir", "Über", "Night", "東京", "River", "Señor", "Blue", "Ghost", "Øresund", "Dream"]


def titles(rng):
    result = {}
    for item in range(1, N_ITEMS + 1):
        words = rng.sample(WORDS, 2)
        result[item] = f"{words[0]} {words[1]} {item}"
    result[7] = ""  # no title: the placeholder is used
    result[8] = " ".join(["Extraordinarily"] * 40) + " Long Title"  # truncated by item_text_max_tokens
    return result


def interactions(rng):
    rows = []
    for user in range(1, N_USERS + 1):
        genre = rng.randrange(4)
        length = rng.randint(10, 16)
        items, t = [], 1_000_000 + user * 1000
        while len(items) < length:
            if rng.random() < 0.2:
                genre = rng.randrange(4)
            item = genre * 10 + rng.randint(1, 10)
            if item not in items:
                items.append(item)
        for item in items:
            t += rng.randint(1, 100)
            rows.append((user, item, rng.randint(1, 5), t))
    return rows


def main(root=os.path.dirname(os.path.abspath(__file__))):
    rng = random.Random(7)
    folder = os.path.join(root, NAME)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{NAME}.item"), "w", encoding="utf-8", newline="\n") as handle:
        handle.write("item_id:token\ttitle:token_seq\tyear:token\n")
        for item, title in titles(rng).items():
            handle.write(f"{item}\t{title}\t{1990 + item % 20}\n")
    with open(os.path.join(folder, f"{NAME}.inter"), "w", encoding="utf-8", newline="\n") as handle:
        handle.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user, item, rating, t in interactions(rng):
            handle.write(f"{user}\t{item}\t{rating}\t{t}\n")
    return folder


if __name__ == "__main__":
    print(main())
