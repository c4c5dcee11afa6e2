//! Text GraphDef import must return a graph or an error, never panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|text: &str| {
    let _ = quant_core::import::tf::import_graph_def_text(text, quant_core::OpRegistry::builtin());
});
