//! Embedding quant-core: import or build a graph, match a pattern, write JSON.
//! The README shows this code; run it with `cargo run -p quant-core --example embed`.

use quant_core::builder::{GraphBuilder, Padding};
use quant_core::matcher::PatternBuilder;
use quant_core::serialize::{json, read_graph};
use quant_core::{DType, OpRegistry, Shape, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Import a frozen TensorFlow graph (.pb or .pbtxt) or quant's own JSON.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/tf/cnn/graph.pb");
    let imported = read_graph(path.as_ref(), OpRegistry::builtin())?;
    println!("imported {} nodes", imported.len());

    // Or build one.
    let mut b = GraphBuilder::new();
    let x = b.placeholder(
        "input",
        DType::F32,
        Shape(vec![None, Some(28), Some(28), Some(1)]),
    )?;
    let w = b.variable(
        "conv1/weights",
        Tensor::zeros(DType::F32, &[3, 3, 1, 8])?,
        true,
    )?;
    let y = b.scope("conv1", |b| b.conv2d("Conv2D", x, w, [1, 1], Padding::Same))?;
    b.relu6("conv1/Relu6", y)?;
    let graph = b.finish();

    // Find every conv followed by an activation.
    let mut p = PatternBuilder::new();
    let (input, weights) = (p.any(), p.op("Variable|Const").id());
    let conv = p
        .op("Conv2D")
        .inputs([input, weights])
        .unordered()
        .name("layer")
        .id();
    let act = p.op("Relu|Relu6").inputs([conv]).id();
    let pattern = p.build(act)?;
    for m in pattern.match_graph(&graph) {
        if let Some(layer) = m.node_named("layer") {
            println!("layer: {}", graph.node(layer).name());
        }
    }
    println!("{}", json::to_json(&graph).len()); // versioned, stable graph JSON
    Ok(())
}
