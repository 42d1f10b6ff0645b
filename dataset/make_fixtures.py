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


MARKOV_NAME = "markov-synth"


def markov_fixture(root, n_users=300, n_items=30, length=12, follow=0.9, seed=11):
    """A dataset in which ONLY the collaborative signal predicts the next item: each item has one hidden
    successor (a random cycle over all items) followed with probability ``follow``, and titles are random
    letter strings unrelated to it. A sequential model learns the successor; an LLM reading titles alone
    can only guess. Writes ``<root>/markov-synth/markov-synth.{inter,item}`` and returns the titles."""
    rng = random.Random(seed)
    order = list(range(1, n_items + 1))
    rng.shuffle(order)
    successor = {order[i]: order[(i + 1) % n_items] for i in range(n_items)}
    letters = "bcdfghjklmnpqrstvwxz"
    vowels = "aeiou"
    titles, used = {}, set()
    for item in range(1, n_items + 1):
        while True:
            word = "".join(rng.choice(letters) + rng.choice(vowels) for _ in range(2))
            if word not in used:
                used.add(word)
                break
        titles[item] = f"{word.capitalize()} {rng.choice(letters)}{rng.choice(vowels)}{rng.choice(letters)}"
    folder = os.path.join(root, MARKOV_NAME)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{MARKOV_NAME}.item"), "w", encoding="utf-8", newline="\n") as handle:
        handle.write("item_id:token\ttitle:token_seq\n")
        for item, title in titles.items():
            handle.write(f"{item}\t{title}\n")
    with open(os.path.join(folder, f"{MARKOV_NAME}.inter"), "w", encoding="utf-8", newline="\n") as handle:
        handle.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user in range(1, n_users + 1):
            item, seen, t = rng.randint(1, n_items), [], 1_000_000 + user * 1000
            while len(seen) < length:
                if item not in seen:
                    seen.append(item)
                item = successor[item] if rng.random() < follow else rng.randint(1, n_items)
            for item in seen:
                t += rng.randint(1, 100)
                handle.write(f"{user}\t{item}\t{t}\n")
    return titles


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
