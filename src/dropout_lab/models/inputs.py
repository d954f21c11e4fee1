"""Input-size checks shared by the torchvision backbones whose strided stems need a minimum size."""


def require_min_size(model: str, image_size: int, min_size: int) -> None:
    """Refuse inputs smaller than ``min_size`` pixels per side before the model is built.

    Raises:
        ValueError: naming the model, both sizes and the fix (``dataset.image_size=224``, seed 004).
    """
    if image_size < min_size:
        raise ValueError(f"{model} needs inputs of at least {min_size}x{min_size} pixels, got {image_size}x{image_size}; "
                         "resize them on the device with dataset.image_size=224 (seed 004)")
