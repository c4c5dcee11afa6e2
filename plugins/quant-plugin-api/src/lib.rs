//! # quant-plugin-api
//!
//! The plugin contract of quant: the TOML manifest format (targets and layer
//! patterns as data), the versioned C ABI for dynamically loaded libraries
//! (custom matchers, kernels, exporters), and the host-side loader that
//! validates manifests, checks the ABI handshake and SHA-256 pins, and
//! registers plugins into the pattern and target registries.
//!
//! Status: not built yet (issue 7). It depends on quant-core.
