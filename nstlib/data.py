"""The pictures the course works with, by name (data/SOURCES.md says where each one comes from).

Bundled with the package, in `SAMPLES` (`sample(name)`, `sample_path(name)`):

- content photos: astronaut, chelsea, coffee, grace_hopper, rocket;
- styles: stained_glass, waves, hubble_deep_field, immunohistochemistry, brick, gravel;
- a mask for spatial control: astronaut_mask.

Not bundled, in `PAINTINGS`: public-domain paintings on Wikimedia Commons, downloaded on first use and
cached (`nstlib.download.painting(name)`, or `nstlib.download.style_image(name, fallback)`, which falls
back to a bundled style when offline): starry_night, great_wave, scream, composition_vii,
fighting_temeraire. Fetching lives in `nstlib.download` because this module comes before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import torch

from nstlib.errors import ImageLoadError
from nstlib.images import load_image

CONTENT_SAMPLES = ("astronaut", "chelsea", "coffee", "grace_hopper", "rocket")
STYLE_SAMPLES = ("stained_glass", "waves", "hubble_deep_field", "immunohistochemistry", "brick", "gravel")
MASK_SAMPLES = ("astronaut_mask",)  # grey PNG masks for spatial control (see nstlib.masks)
SAMPLES = CONTENT_SAMPLES + STYLE_SAMPLES + MASK_SAMPLES

#: Where Wikimedia Commons serves its files; `nstlib.download` can swap it for a mirror (NSTLIB_PAINTINGS_URL).
UPLOAD_ORIGIN = "https://upload.wikimedia.org"
#: Width of the thumbnails we fetch. Commons renders only its standard widths (20 ... 960, 1280, 1920, 3840
#: px) and refuses others, so this is the standard width nearest 1024 px: about 150-400 kB per painting.
THUMB_WIDTH = 960


def sample_path(name: str) -> Path:
    """The file of the bundled sample `name` (one of `SAMPLES`)."""
    if name not in SAMPLES:
        raise ImageLoadError(f"unknown sample '{name}'; choose one of {', '.join(SAMPLES)}")
    suffix = ".png" if name in MASK_SAMPLES else ".jpg"
    return Path(str(resources.files("nstlib.samples") / f"{name}{suffix}"))


def sample(name: str, size: int | None = None) -> torch.Tensor:
    """Load the bundled sample `name` as (1,3,H,W) in [0,1], long side resized to `size` if given."""
    return load_image(sample_path(name), size)


@dataclass(frozen=True)
class Painting:
    """A public-domain painting on Wikimedia Commons, fetched on demand (never bundled).

    `url` is a JPEG thumbnail `THUMB_WIDTH` px wide that Commons renders from its file; `source` is the
    file's page on Commons, which records the author, the date and why it is in the public domain.
    """

    name: str
    title: str
    artist: str
    year: str
    url: str
    source: str
    licence: str = "public domain"

    @property
    def credit(self) -> str:
        """One line for a caption: title, artist, year, licence and where the file comes from."""
        return f"{self.title}, {self.artist}, {self.year}, {self.licence} (Wikimedia Commons)"


def _on_commons(name: str, title: str, artist: str, year: str, folder: str, file: str) -> Painting:
    """A `Painting` for the Commons file `file` (underscores for spaces), stored under `folder`.

    `folder` is Commons' hash path "a/ab": the first one and two hex digits of the MD5 of `file`.
    The file name is percent-encoded (commas become %2C) as in the URLs Commons itself writes.
    """
    quoted = quote(file)
    return Painting(
        name, title, artist, year,
        url=f"{UPLOAD_ORIGIN}/wikipedia/commons/thumb/{folder}/{quoted}/{THUMB_WIDTH}px-{quoted}",
        source=f"https://commons.wikimedia.org/wiki/File:{file}",
    )


#: The paintings `nstlib.download.painting` can fetch, by short name.
PAINTINGS = {p.name: p for p in (
    _on_commons("starry_night", "The Starry Night", "Vincent van Gogh", "1889",
                "e/ea", "Van_Gogh_-_Starry_Night_-_Google_Art_Project.jpg"),
    _on_commons("great_wave", "The Great Wave off Kanagawa", "Katsushika Hokusai", "c. 1831",
                "0/0a", "The_Great_Wave_off_Kanagawa.jpg"),
    _on_commons("scream", "The Scream", "Edvard Munch", "1893", "c/c5",
                "Edvard_Munch,_1893,_The_Scream,_oil,_tempera_and_pastel_on_cardboard,_91_x_73_cm,"
                "_National_Gallery_of_Norway.jpg"),
    _on_commons("composition_vii", "Composition VII", "Wassily Kandinsky", "1913",
                "b/b4", "Vassily_Kandinsky,_1913_-_Composition_7.jpg"),
    _on_commons("fighting_temeraire", "The Fighting Temeraire", "J. M. W. Turner", "1839",
                "3/30", "The_Fighting_Temeraire,_JMW_Turner,_National_Gallery.jpg"),
)}
