"""HASTE tiering worker: score each image's focus and file it into a storage tier."""
