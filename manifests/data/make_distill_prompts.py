"""Write distill_prompts.jsonl: short, varied instructions for the teacher to answer (stage 1).

Templates and vocabulary written for slmops; a fixed seed makes the file reproducible:
    python manifests/data/make_distill_prompts.py            # rewrites distill_prompts.jsonl
Most templates ask for a sentence or two, so a small teacher finishes within its token limit.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 20240917
COUNT = 320

CONCEPTS = [
    "photosynthesis",
    "gravity",
    "a rainbow",
    "an echo",
    "inflation",
    "a vaccine",
    "a volcano",
    "the water cycle",
    "a solar eclipse",
    "compound interest",
    "a democracy",
    "evaporation",
    "an earthquake",
    "a black hole",
    "the immune system",
    "a battery",
    "a compiler",
    "a database",
    "encryption",
    "a password manager",
    "machine learning",
    "a neural network",
    "recycling",
    "a thermostat",
    "the tides",
    "friction",
    "a budget",
    "a metaphor",
    "a haiku",
    "the internet",
    "a cloud server",
    "an operating system",
    "a spreadsheet",
    "a map projection",
    "a calendar",
]
AUDIENCES = ["a child", "a beginner", "a busy manager", "a new student", "a grandparent", "a tourist"]
TASKS = [
    "make a cup of tea",
    "plant a tomato seed",
    "back up a laptop",
    "learn a new word every day",
    "write a thank-you note",
    "prepare for a job interview",
    "keep a houseplant alive",
    "pack for a weekend trip",
    "save money on groceries",
    "fall asleep faster",
    "clean a keyboard",
    "start running",
    "organise a small desk",
    "remember a phone number",
    "cook rice",
    "choose a strong password",
    "read more books",
    "keep a bicycle in good shape",
]
PAIRS = [
    ("a cat", "a dog"),
    ("tea", "coffee"),
    ("a city", "a village"),
    ("summer", "winter"),
    ("a book", "a film"),
    ("walking", "cycling"),
    ("a laptop", "a tablet"),
    ("rain", "snow"),
    ("a lake", "a river"),
    ("email", "a phone call"),
    ("a train", "a plane"),
    ("the sun", "the moon"),
    ("a pencil", "a pen"),
    ("an apple", "an orange"),
    ("RAM", "disk storage"),
    ("a CPU", "a GPU"),
]
TOPICS = [
    "the ocean",
    "autumn leaves",
    "a quiet morning",
    "a busy market",
    "the first snow",
    "a lighthouse",
    "an old bridge",
    "a thunderstorm",
    "a garden",
    "the night sky",
    "a long train ride",
    "a small robot",
]
WORDS = [
    "curious",
    "gentle",
    "rapid",
    "ancient",
    "fragile",
    "generous",
    "humble",
    "brilliant",
    "vivid",
    "patient",
    "reliable",
    "efficient",
    "honest",
    "clever",
    "calm",
    "bold",
    "tiny",
    "enormous",
]
SENTENCES = [
    "The meeting was moved to Thursday because the room was booked.",
    "I forgot my umbrella and got wet on the way home.",
    "The new update makes the app start twice as fast.",
    "Our team finished the project a week before the deadline.",
    "The museum is closed on Mondays but open late on Fridays.",
    "She planted three trees in the garden last spring.",
    "The printer on the second floor is out of paper again.",
    "He learned to play the guitar by watching videos.",
    "The bakery sells fresh bread every morning at seven.",
    "Our flight was delayed by two hours because of fog.",
]
REVIEWS = [
    "The food was cold and the waiter ignored us.",
    "Absolutely loved the concert, best night ever!",
    "The phone works, nothing special.",
    "Fast delivery and the shoes fit perfectly.",
    "The hotel room was dirty and noisy.",
    "A decent book with a slow start.",
    "Great value for the price, I would buy it again.",
    "The software crashes every time I open it.",
]
ITEMS = ["apples", "books", "pencils", "marbles", "cookies", "stickers", "coins", "shells"]
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Julia"]
LISTS = [
    "fruits",
    "colours",
    "planets",
    "musical instruments",
    "kitchen tools",
    "sports",
    "birds",
    "programming languages",
    "types of weather",
    "things found in a classroom",
    "ways to save energy",
    "healthy breakfast foods",
    "board games",
    "parts of a computer",
    "farm animals",
]


def _arith(rng: random.Random) -> str:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 20), rng.randint(1, 9)
    verb = rng.choice(["gets", "buys", "finds"])
    return f"{name} has {a} {item} and {verb} {b} more. How many {item} does {name} have now? Answer briefly."


TEMPLATES = [
    lambda r: f"Explain {r.choice(CONCEPTS)} in one or two sentences.",
    lambda r: f"Explain {r.choice(CONCEPTS)} to {r.choice(AUDIENCES)} in two short sentences.",
    lambda r: f"What is {r.choice(CONCEPTS)}? Answer in one sentence.",
    lambda r: f"Give three short tips to {r.choice(TASKS)}.",
    lambda r: f"In two sentences, how do I {r.choice(TASKS)}?",
    lambda r: "What is one difference between {} and {}?".format(*r.choice(PAIRS)),
    lambda r: "Compare {} and {} in two sentences.".format(*r.choice(PAIRS)),
    lambda r: f"Write a short poem of four lines about {r.choice(TOPICS)}.",
    lambda r: f"Describe {r.choice(TOPICS)} in one vivid sentence.",
    lambda r: f"What does the word '{r.choice(WORDS)}' mean? Use it in a sentence.",
    lambda r: f"Give a synonym and an antonym for '{r.choice(WORDS)}'.",
    lambda r: f"Rewrite this sentence in a more formal tone: {r.choice(SENTENCES)}",
    lambda r: f"Summarise in five words: {r.choice(SENTENCES)}",
    lambda r: f"Is this review positive or negative? Explain in one sentence: {r.choice(REVIEWS)}",
    lambda r: f"Name {r.choice(['three', 'four', 'five'])} {r.choice(LISTS)}.",
    _arith,
    lambda r: f"Write a one-sentence title for a story about {r.choice(TOPICS)}.",
    lambda r: f"Why is {r.choice(CONCEPTS)} useful? Answer in two sentences.",
]


def make_prompts(count: int = COUNT, seed: int = SEED) -> list[dict[str, str]]:
    rng = random.Random(seed)
    seen: set[str] = set()
    prompts = []
    while len(prompts) < count:
        text = rng.choice(TEMPLATES)(rng)
        if text not in seen:
            seen.add(text)
            prompts.append({"id": f"p{len(prompts) + 1:04d}", "prompt": text})
    return prompts


if __name__ == "__main__":
    out = Path(__file__).with_name("distill_prompts.jsonl")
    out.write_text("".join(json.dumps(p) + "\n" for p in make_prompts()))
    print(f"wrote {COUNT} prompts to {out}")
