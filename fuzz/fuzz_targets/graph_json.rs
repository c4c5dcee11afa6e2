//! Graph JSON import must return a graph or an error, never panic; a graph
//! that imports must survive a round trip unchanged.
#![no_main]
use quant_core::serialize::json::{from_json, to_json};
libfuzzer_sys::fuzz_target!(|text: &str| {
    if let Ok(graph) = from_json(text, quant_core::OpRegistry::builtin()) {
        let again = from_json(&to_json(&graph), quant_core::OpRegistry::builtin()).expect("re-import of exported JSON");
        assert!(again == graph || to_json(&again) == to_json(&graph), "JSON round trip changed the graph");
    }
});
