"""Compiled kernels for XLA:CPU, called through the XLA FFI, each with a pure-JAX fallback:
`conv.conv_general_dilated` (oneDNN convolutions, extension `_onednn_conv`)."""
