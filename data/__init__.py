"""Small files shipped inside the deltarubric wheel (benchmark annotations without media, the demo's examples).

README.md beside this file lists each with its source and licence. Read them through `shipped()`, which finds them
wherever the package is installed, never through a path relative to a checkout.
"""

from importlib.resources import files
from pathlib import Path


def shipped(*parts: str) -> Path:
    """A shipped file or folder by its path inside the data package, e.g. `shipped("vl-rewardbench", "data.jsonl")`."""
    return Path(str(files(__name__).joinpath(*parts)))
