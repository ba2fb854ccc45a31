"""One module per public dataset; importing this package registers them all (`base.get_converter`)."""

from deltarubric.pairdata.converters import (  # noqa: F401
    gram_rr,
    helpsteer3,
    mm_rlhf,
    open_image_preferences,
    rapidata,
    rlaif_v,
    vision_feedback_mix,
)
from deltarubric.pairdata.converters.base import ConvertSummary, convert, converter_names, get_converter  # noqa: F401
