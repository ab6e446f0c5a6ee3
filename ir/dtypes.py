"""Short dtype names used in the IR text form (`f32`, `i64`, ...) and their torch dtypes."""
import torch

DTYPE_TO_SHORT: dict[torch.dtype, str] = {
    torch.float32: "f32",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.float64: "f64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int16: "i16",
    torch.int8: "i8",
    torch.uint8: "u8",
    torch.bool: "b8",
}
SHORT_TO_DTYPE: dict[str, torch.dtype] = {v: k for k, v in DTYPE_TO_SHORT.items()}


def short_dtype(dtype: torch.dtype) -> str:
    return DTYPE_TO_SHORT.get(dtype, str(dtype).removeprefix("torch."))


def numpy_dtype_name(dtype: torch.dtype) -> str:
    """The numpy / TVM spelling of a torch dtype (`float32`, `int64`, ...)."""
    return str(dtype).removeprefix("torch.")
