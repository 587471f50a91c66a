"""lessonlib: the companion package of the Multimodal Networks course (introduced in lesson 00_welcome).

Notebooks start with ``cfg = lessonlib.setup()``; everything else lives in small modules with plain
names (``lessonlib.data``, ``lessonlib.zeroshot``, ...), imported when a lesson needs them.
"""

from lessonlib.environment import get_mode, setup
from lessonlib.images import ImageLoadError, load_image

__version__ = "0.1.0"
__all__ = ["setup", "get_mode", "load_image", "ImageLoadError", "__version__"]
