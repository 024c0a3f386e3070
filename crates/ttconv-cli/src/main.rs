//! `ttconv`: compress a checkpoint's convolutions into TT layers, inspect a file, or turn TT
//! layers back into dense kernels. A thin front end over `ttconv-models`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use ttconv::Backend;
mod onnx;

use ttconv_models::{
    Checkpoint, Limits, Pattern, Policy, Progress, RankRule, ReportOptions, Target, TtMetadata,
    compress, decompress, find_tt_layers, read_checkpoint, write_atomic, write_checkpoint,
};

#[derive(Parser, Debug)]
#[command(
    name = "ttconv",
    version,
    about = "Tensor-Train compression of convolution checkpoints"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Decompose every eligible convolution kernel into TT cores: a checkpoint gets
    /// TensorLy-Torch's names (written as safetensors), an `.onnx` model gets each Conv replaced
    /// by its chain of plain Conv nodes (checked in ONNX Runtime). Prints a per-layer table.
    Compress(Box<CompressArgs>),
    /// List a file's tensors and its TT layers.
    Inspect {
        /// A safetensors or PyTorch (.pt / .pth) file.
        file: PathBuf,
    },
    /// Write one TT layer of a checkpoint as an ONNX model (its chain of plain Conv nodes).
    Export {
        /// A checkpoint with TT layers (safetensors or .pt).
        input: PathBuf,
        /// Output .onnx file.
        #[arg(short, long)]
        output: PathBuf,
        /// The layer's name prefix (default: the file's only TT layer).
        #[arg(long)]
        layer: Option<String>,
    },
    /// Read a TT chain ONNX model (as `export` writes it) back as a TT layer checkpoint.
    Import {
        /// The .onnx model: a pointwise Conv, one Conv per spatial axis, a pointwise Conv.
        input: PathBuf,
        /// Output safetensors file.
        #[arg(short, long)]
        output: PathBuf,
        /// The layer's name prefix in the checkpoint.
        #[arg(long, default_value = "conv")]
        prefix: String,
    },
    /// Reconstruct dense kernels from TT layers (for fine-tuning in plain PyTorch).
    Decompress {
        /// Input file with TT layers.
        input: PathBuf,
        /// Output safetensors file.
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Args, Debug)]
struct CompressArgs {
    /// Input checkpoint: safetensors, or a PyTorch .pt / .pth (zip or legacy format); or an
    /// ONNX model (.onnx).
    input: PathBuf,
    /// Output file: safetensors for a checkpoint, .onnx for a model (never the input; written
    /// atomically).
    #[arg(short, long)]
    output: PathBuf,
    /// Rank for every layer: same, a fraction (0.5), an int (8) or a list (1,8,8,1); without
    /// --rank, --tol or --ratio: 0.5.
    #[arg(long, group = "target")]
    rank: Option<String>,
    /// Relative kernel error allowed per layer.
    #[arg(long, group = "target")]
    tol: Option<f64>,
    /// Compression ratio of all eligible kernels together, met with the least total error.
    #[arg(long, group = "target")]
    ratio: Option<f64>,
    /// Cap on every TT rank.
    #[arg(long)]
    max_rank: Option<usize>,
    /// Per-layer rule PATTERN=SPEC (SPEC: a --rank value, tol:EPS or dense); repeatable, the
    /// first match wins.
    #[arg(long = "layer", value_name = "PATTERN=SPEC")]
    layers: Vec<String>,
    /// Only layers matching this glob (repeatable).
    #[arg(long)]
    include: Vec<String>,
    /// Skip layers matching this glob (repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// Skip kernels with fewer parameters.
    #[arg(long, default_value_t = 0)]
    min_params: usize,
    /// Decompose a layer even when its TT form is not smaller than the kernel.
    #[arg(long)]
    keep_larger: bool,
    /// Keep a layer dense when our cost model runs it faster dense than factorized at its input
    /// size (a checkpoint: the --input-size given; an ONNX model: the shapes of a run).
    #[arg(long)]
    auto_speed: bool,
    /// Write the report as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Input spatial size HxW (or D, or DxHxW) for the MACs columns and Auto's choice.
    #[arg(long, value_name = "HxW")]
    input_size: Option<String>,
    /// ONNX models (`.onnx` in and out) only: how the compressed model is checked.
    #[command(flatten)]
    onnx: onnx::OnnxArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn run(command: Command) -> Res<()> {
    match command {
        Command::Compress(args) => run_compress(*args),
        Command::Inspect { file } => run_inspect(&file),
        Command::Decompress { input, output } => run_decompress(&input, &output),
        Command::Export {
            input,
            output,
            layer,
        } => onnx::run_export(&input, &output, layer.as_deref()),
        Command::Import {
            input,
            output,
            prefix,
        } => onnx::run_import(&input, &output, &prefix),
    }
}

fn policy_of(args: &CompressArgs) -> Res<Policy> {
    let target = match (&args.rank, args.tol, args.ratio) {
        (Some(r), _, _) => Target::PerLayer(RankRule::parse(r)?),
        (_, Some(t), _) => Target::PerLayer(RankRule::tolerance(t)?),
        (_, _, Some(x)) => Target::Ratio(x),
        _ => Policy::default().target,
    };
    let mut overrides = Vec::new();
    for l in &args.layers {
        let (p, spec) = l
            .split_once('=')
            .ok_or_else(|| format!("--layer `{l}`: PATTERN=SPEC expected"))?;
        overrides.push((Pattern::new(p)?, RankRule::parse(spec)?));
    }
    let patterns = |v: &[String]| {
        v.iter()
            .map(|p| Pattern::new(p))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Policy {
        target,
        max_rank: args.max_rank,
        overrides,
        include: patterns(&args.include)?,
        exclude: patterns(&args.exclude)?,
        min_params: args.min_params,
        require_smaller: !args.keep_larger,
        require_faster: args.auto_speed,
    })
}

fn parse_size(text: &str) -> Res<Vec<usize>> {
    let dims: Result<Vec<usize>, _> = text.split(['x', 'X']).map(|d| d.trim().parse()).collect();
    match dims {
        Ok(d) if !d.is_empty() && d.iter().all(|&n| n > 0) => Ok(d),
        _ => Err(format!("--input-size `{text}`: positive sizes like 56x56 expected").into()),
    }
}

/// A progress display: a bar on a terminal, plain lines otherwise.
pub(crate) struct Display {
    bar: Option<ProgressBar>,
    last: usize,
}

impl Display {
    pub(crate) fn new() -> Self {
        Self {
            bar: None,
            last: usize::MAX,
        }
    }

    pub(crate) fn update(&mut self, p: Progress<'_>) {
        if std::io::stderr().is_terminal() {
            let bar = self.bar.get_or_insert_with(|| {
                let b = ProgressBar::new(p.total as u64);
                b.set_style(
                    ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
                        .expect("valid template"),
                );
                b
            });
            bar.set_position(p.done as u64);
            bar.set_message(p.what.to_string());
            if p.done == p.total {
                bar.finish_and_clear();
            }
        } else if p.done < p.total && p.done != self.last {
            self.last = p.done;
            eprintln!("[{}/{}] {}", p.done + 1, p.total, p.what);
        }
    }
}

fn run_compress(args: CompressArgs) -> Res<()> {
    let policy = policy_of(&args)?;
    let options = ReportOptions {
        input_spatial: args.input_size.as_deref().map(parse_size).transpose()?,
        cost_constants: ttconv_cpu::CpuBackend::new().cost_constants(),
    };
    if onnx::is_onnx(&args.input) {
        return onnx::run_compress(&args, &policy, &options);
    }
    if args.auto_speed && options.input_spatial.is_none() {
        return Err(
            "--auto-speed needs --input-size for a checkpoint (it records no shapes)".into(),
        );
    }
    let start = Instant::now();
    let ckpt = read_checkpoint(&args.input, &Limits::default())?;
    let mut display = Display::new();
    let (out, report) = compress(&ckpt, &policy, &options, &mut |p| display.update(p))?;
    write_checkpoint(&args.output, &out, Some(&args.input))?;
    if let Some(path) = &args.report {
        write_atomic(path, report.to_json().as_bytes(), Some(&args.input))?;
    }
    emit(&format!(
        "{}wrote {} in {:.2} s\n",
        report.to_table(),
        args.output.display(),
        start.elapsed().as_secs_f64()
    ))
}

fn shape_text(s: &[usize]) -> String {
    s.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// Writes to stdout; a closed pipe (`ttconv inspect f | head`) ends the output quietly.
pub(crate) fn emit(text: &str) -> Res<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn run_inspect(path: &Path) -> Res<()> {
    use std::fmt::Write;
    let ckpt: Checkpoint = read_checkpoint(path, &Limits::default())?;
    let mut out = String::new();
    writeln!(
        out,
        "{}: {} tensors, {} parameters",
        path.display(),
        ckpt.tensors.len(),
        ckpt.numel()
    )?;
    let width = ckpt.tensors.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, t) in &ckpt.tensors {
        writeln!(
            out,
            "  {name:<width$}  {:<4}  {}",
            t.dtype().name(),
            shape_text(t.shape())
        )?;
    }
    let layers = find_tt_layers(&ckpt)?;
    if layers.is_empty() {
        writeln!(out, "no TT layers")?;
        return emit(&out);
    }
    // Fails loudly on a malformed entry rather than printing without it.
    TtMetadata::from_metadata(&ckpt.metadata)?;
    writeln!(out, "TT layers:")?;
    for l in &layers {
        let dense: usize = l.kernel_shape().iter().product();
        let error = l
            .meta
            .rel_error
            .map_or_else(|| "-".to_string(), |e| format!("{e:.4}"));
        let geometry = l.meta.geometry().map_or_else(
            || "geometry unknown".to_string(),
            |g| {
                format!(
                    "stride {:?} padding {:?} dilation {:?}",
                    g.stride, g.padding, g.dilation
                )
            },
        );
        writeln!(
            out,
            "  {}  kernel {}  ranks {:?}  params {} (dense {dense}, {:.2}x)  error {error}  bias {}  {geometry}",
            l.prefix,
            shape_text(&l.kernel_shape()),
            l.tt.ranks(),
            l.params(),
            dense as f64 / l.params() as f64,
            if l.bias.is_some() { "yes" } else { "no" },
        )?;
    }
    emit(&out)
}

fn run_decompress(input: &Path, output: &Path) -> Res<()> {
    let ckpt = read_checkpoint(input, &Limits::default())?;
    let (out, prefixes) = decompress(&ckpt)?;
    write_checkpoint(output, &out, Some(input))?;
    emit(&format!(
        "{} TT layers made dense ({}); wrote {}\n",
        prefixes.len(),
        prefixes.join(", "),
        output.display()
    ))
}
