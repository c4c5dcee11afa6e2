//! Binary GraphDef import must return a graph or an error, never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = quant_core::import::tf::import_graph_def(data, quant_core::OpRegistry::builtin());
});
