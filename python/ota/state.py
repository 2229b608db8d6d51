# ota.state: the device's small state files (the resume offset of an interrupted download, ...),
# as JSON.

import json
import os


# The content of the JSON file at path, or None when it is missing or not JSON.
def read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write(path, value):
    with open(path, "w") as f:
        json.dump(value, f)


def forget(path):
    try:
        os.remove(path)
    except OSError:
        pass
