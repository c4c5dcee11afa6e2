//! `cargo xtask plugins list [--plugin MANIFEST.toml]... [--json]`: loads
//! the plugins (validating every manifest before opening any library) and
//! lists what is registered: quant's built-in targets, layer patterns and
//! exporters next to the plugins' targets, patterns, op types and exporters.

use anyhow::{Result, anyhow};
use quant_passes::target::{Storage, Target};
use quant_plugin_api::manifest::BUILTIN_EXPORTERS;
use quant_plugin_api::{GRAD_SUFFIX, Plugins, load_plugins};
use serde::Serialize;
use std::path::PathBuf;

/// Arguments of `plugins`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// List the registered targets, layer patterns, op types and exporters.
    List(ListArgs),
}

/// Arguments of `plugins list`.
#[derive(clap::Args)]
struct ListArgs {
    /// A plugin manifest to load (repeatable).
    #[arg(long = "plugin", value_name = "MANIFEST.toml")]
    plugins: Vec<PathBuf>,
    /// Print one JSON object on stdout instead of the listing.
    #[arg(long)]
    json: bool,
}

/// Who registered an entry: `built-in` or a plugin's name.
const BUILTIN: &str = "built-in";

#[derive(Serialize)]
struct PluginRow {
    name: String,
    version: String,
    manifest: String,
    library: Option<String>,
}

#[derive(Serialize)]
struct TargetRow {
    name: String,
    from: String,
    weight_bits: u32,
    activation_bits: u32,
    symmetric_weights: bool,
    symmetric_activations: bool,
    per_channel_weights: bool,
    narrow_range_weights: bool,
    storage: &'static str,
    exporter: Option<String>,
    description: String,
}

#[derive(Serialize)]
struct NamedRow {
    name: String,
    from: String,
    description: String,
}

#[derive(Serialize)]
struct OpRow {
    name: String,
    from: String,
    inputs: usize,
    outputs: usize,
    gradient: Option<String>,
    integer_kernel: bool,
}

#[derive(Serialize)]
struct Listing {
    plugins: Vec<PluginRow>,
    targets: Vec<TargetRow>,
    patterns: Vec<NamedRow>,
    ops: Vec<OpRow>,
    exporters: Vec<NamedRow>,
}

fn owner(plugins: &Plugins, owns: impl Fn(&quant_plugin_api::Manifest) -> bool) -> String {
    plugins
        .iter()
        .find(|p| owns(p.manifest()))
        .map_or_else(|| BUILTIN.to_string(), |p| p.manifest().name.clone())
}

fn target_row(plugins: &Plugins, t: &Target) -> TargetRow {
    TargetRow {
        name: t.name.clone(),
        from: owner(plugins, |m| m.targets.iter().any(|x| x.name == t.name)),
        weight_bits: t.weight_bits,
        activation_bits: t.activation_bits,
        symmetric_weights: t.symmetric_weights,
        symmetric_activations: t.symmetric_activations,
        per_channel_weights: t.per_channel_weights,
        narrow_range_weights: t.narrow_range_weights,
        storage: match t.storage {
            Storage::I8 => "int8",
            Storage::U8 => "uint8",
        },
        exporter: t.exporter.clone(),
        description: t.description.clone(),
    }
}

fn listing(plugins: &Plugins) -> Listing {
    let builtin = |name: &str, description: &str| NamedRow {
        name: name.to_string(),
        from: BUILTIN.to_string(),
        description: description.to_string(),
    };
    let patterns: Vec<NamedRow> = plugins
        .patterns()
        .iter()
        .map(|p| NamedRow {
            name: p.name().to_string(),
            from: if p.is_builtin() {
                BUILTIN.to_string()
            } else {
                owner(plugins, |m| {
                    m.patterns.iter().any(|x| x.name() == p.name())
                        || m.matchers.iter().any(|x| x.name == p.name())
                })
            },
            description: p.description().to_string(),
        })
        .collect();
    let mut exporters: Vec<NamedRow> = BUILTIN_EXPORTERS
        .iter()
        .map(|name| builtin(name, "TFLite flatbuffer"))
        .collect();
    let mut ops = Vec::new();
    for plugin in plugins.iter() {
        let m = plugin.manifest();
        exporters.extend(m.exporters.iter().map(|e| NamedRow {
            name: e.clone(),
            from: m.name.clone(),
            description: String::new(),
        }));
        ops.extend(m.ops.iter().map(|o| {
            OpRow {
                name: o.name.clone(),
                from: m.name.clone(),
                inputs: o.inputs,
                outputs: o.outputs,
                gradient: plugin
                    .has_gradient(&o.name)
                    .then(|| format!("{}{GRAD_SUFFIX}", o.name)),
                integer_kernel: plugin.has_integer_kernel(&o.name),
            }
        }));
    }
    Listing {
        plugins: plugins
            .iter()
            .map(|p| {
                let m = p.manifest();
                PluginRow {
                    name: m.name.clone(),
                    version: m.version.clone(),
                    manifest: m.path.display().to_string(),
                    library: m.library.as_ref().map(|l| l.display().to_string()),
                }
            })
            .collect(),
        targets: plugins
            .targets()
            .iter()
            .map(|t| target_row(plugins, t))
            .collect(),
        patterns,
        ops,
        exporters,
    }
}

fn print(listing: &Listing) {
    println!("plugins:");
    if listing.plugins.is_empty() {
        println!("  (none loaded)");
    }
    for p in &listing.plugins {
        let library = p.library.as_deref().unwrap_or("data only");
        println!("  {} {}  {}  ({library})", p.name, p.version, p.manifest);
    }
    println!("targets:");
    for t in &listing.targets {
        let sym = |s: bool| if s { "symmetric" } else { "asymmetric" };
        let weights = format!(
            "{}-bit {}{}{} weights",
            t.weight_bits,
            sym(t.symmetric_weights),
            if t.per_channel_weights {
                " per-channel"
            } else {
                " per-tensor"
            },
            if t.narrow_range_weights {
                " narrow-range"
            } else {
                ""
            },
        );
        let exporter = t.exporter.as_deref().unwrap_or("none (cannot be exported)");
        println!(
            "  {:<16} {:<12} {weights}, {}-bit {} activations, {}, exporter {exporter}",
            t.name,
            t.from,
            t.activation_bits,
            sym(t.symmetric_activations),
            t.storage
        );
    }
    for (title, rows) in [
        ("layer patterns", &listing.patterns),
        ("exporters", &listing.exporters),
    ] {
        println!("{title}:");
        for r in rows {
            println!("  {:<24} {:<12} {}", r.name, r.from, r.description);
        }
    }
    println!("op types:");
    if listing.ops.is_empty() {
        println!("  (built-in only)");
    }
    for o in &listing.ops {
        let gradient = o.gradient.as_deref().unwrap_or("no gradient");
        let integer = if o.integer_kernel {
            "integer kernel (CUSTOM op)"
        } else {
            "no integer kernel"
        };
        println!(
            "  {:<24} {:<12} {} in, {} out, {gradient}, {integer}",
            o.name, o.from, o.inputs, o.outputs
        );
    }
}

/// Runs `plugins`.
pub fn run(args: Args) -> Result<()> {
    match args.action {
        Action::List(args) => {
            let plugins = load_plugins(&args.plugins).map_err(|e| anyhow!("--plugin {e}"))?;
            let listing = listing(&plugins);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&listing)?);
            } else {
                print(&listing);
            }
            Ok(())
        }
    }
}
