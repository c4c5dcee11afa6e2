//! Test library: a plugin table written by hand that claims ABI version 1
//! (a library built for the previous ABI), so the host's handshake must
//! refuse it.

use quant_plugin_api::abi::{ABI_VERSION, PluginTable};

static TABLE: PluginTable = PluginTable {
    abi_version: ABI_VERSION - 1,
    name: c"wrong-abi".as_ptr(),
    ops: std::ptr::null(),
    n_ops: 0,
    exporters: std::ptr::null(),
    n_exporters: 0,
    matchers: std::ptr::null(),
    n_matchers: 0,
};

/// The entry point, returning a table of ABI version 1.
///
/// # Safety
/// Callable from any thread; it only returns a pointer to static data.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn quant_plugin_v1(_host_abi: u32) -> *const PluginTable {
    &TABLE
}
