"""Prompt sets of the benchmark suites (the seed's energy-research and artistic-style studies)."""

from __future__ import annotations

#: Two prompts of one token length: CLIP pads every prompt to 77 tokens, so the work (and energy) per image
#: does not depend on the words; the suite shows it with two, each a case of its own.
ENERGY_RESEARCH_PROMPTS: tuple[str, ...] = (
    "a photograph of an astronaut riding a horse on the moon, highly detailed, 8k",
    "a close-up portrait of an elderly fisherman, weathered skin, dramatic shadows",
)

ARTISTIC_STYLE_PROMPTS: tuple[str, ...] = (
    "a lighthouse on a cliff, oil painting in the style of impressionism",
    "a lighthouse on a cliff, watercolor, loose brush strokes",
    "a lighthouse on a cliff, pixel art, 16-bit video game",
    "a lighthouse on a cliff, ukiyo-e woodblock print",
    "a lighthouse on a cliff, cyberpunk neon digital art",
    "a lighthouse on a cliff, pencil sketch, cross-hatching",
)

# Longer than CLIP's 77-token context: exercises truncation and is the memory-stress prompt.
LONG_PROMPT = ", ".join(
    ["an intricately detailed baroque cathedral interior with golden ornaments"] * 6
    + ["stained glass windows casting coloured light on marble floors, volumetric fog, 8k, masterpiece"] * 3
)
