//! The rank sweep: the factorized and reconstructed forward of 2d_c64_s56 at the ranks of
//! [`super::suite::SWEEP_RANKS`], tabled, plotted to `target/bench/conv_rank_sweep.svg` and
//! returned for the JSON.

use ttconv::{Backend, Implementation, TtConv};
use ttconv_cpu::CpuBackend;

use super::case::{impl_name, random_input};
use super::err;
use super::json::SweepRecord;
use super::suite::{sweep_id, sweep_spec};
use crate::bench::machine::{LoadMeter, Machine};
use crate::bench::measure::{Reps, time_it};
use crate::bench::output::out_dir;
use crate::bench::plot::{self, SweepPoint};
use crate::bench::progress::Progress;
use crate::bench::{BenchOptions, Table};

/// Times the sweep at `ranks`: the points and the external load while each ran.
pub fn measure(
    backend: &CpuBackend,
    options: &BenchOptions,
    m: &Machine,
    ranks: &[usize],
) -> Result<(Vec<SweepPoint>, Vec<Option<f64>>), String> {
    let progress = Progress::new("conv sweep", ranks.len());
    let reps = Reps {
        budget: 0.75,
        ..Reps::for_options(options)
    };
    let mut points = Vec::new();
    let mut loads = Vec::new();
    for (i, &r) in ranks.iter().enumerate() {
        let id = sweep_id(r);
        let spec = sweep_spec(r);
        let mut layer = TtConv::new(spec.config()).map_err(err)?;
        layer
            .init_from_random(ttconv::Init::Direct, 7)
            .map_err(err)?;
        let shape = spec.input_shape();
        let x = backend
            .upload(random_input(&shape, 7).view())
            .map_err(err)?;
        let prepared = layer.prepare(backend).map_err(err)?;
        prepared.dense_kernel().map_err(err)?;
        let load = LoadMeter::start();
        let mut t = [0.0; 2];
        for (k, imp) in [Implementation::Factorized, Implementation::Reconstructed]
            .into_iter()
            .enumerate()
        {
            progress.step(i, &id, impl_name(imp));
            t[k] = time_it(reps, || (), |_| prepared.forward_with(&x, imp).map_err(err))?.median()
                * 1e3;
        }
        let cost = layer
            .flops(&shape, Implementation::Factorized)
            .map_err(err)?;
        let floor = (2.0 * cost.macs as f64 / (m.peak_gflops * 1e9))
            .max(cost.bytes as f64 / (m.bandwidth_gbs * 1e9))
            * 1e3;
        points.push(SweepPoint {
            rank: r,
            factorized_ms: t[0],
            reconstructed_ms: t[1],
            floor_ms: floor,
        });
        loads.push(load.fraction());
    }
    progress.done();
    Ok((points, loads))
}

/// Runs the sweep, prints its table, writes the plot; returns the JSON records and the plot's
/// path.
pub fn run(
    backend: &CpuBackend,
    options: &BenchOptions,
    machine: &Machine,
    ranks: &[usize],
) -> Result<(Vec<SweepRecord>, String), String> {
    let (points, loads) = measure(backend, options, machine, ranks)?;
    let path = out_dir().join("conv_rank_sweep.svg");
    plot::rank_sweep(
        &path,
        &format!(
            "TT conv 2-D, 64 -> 64 ch, 56x56, 3x3, batch 8: forward vs rank ({} threads)",
            machine.threads
        ),
        &points,
    )?;
    let mut t = Table::new(&["rank", "fact ms", "rec ms", "floor ms", "ext load"]);
    for (p, l) in points.iter().zip(&loads) {
        t.row(vec![
            p.rank.to_string(),
            format!("{:.3}", p.factorized_ms),
            format!("{:.3}", p.reconstructed_ms),
            format!("{:.3}", p.floor_ms),
            l.map_or("-".into(), |l| format!("{l:.2}")),
        ]);
    }
    println!("\nRank sweep, 2d_c64_s56 (batch 8, 3x3, padding 1)");
    print!("{t}");
    println!("written {}", path.display());
    let records = points
        .iter()
        .zip(loads)
        .map(|(p, l)| SweepRecord {
            rank: p.rank,
            factorized_ms: p.factorized_ms,
            reconstructed_ms: p.reconstructed_ms,
            floor_ms: p.floor_ms,
            external_load: l,
        })
        .collect();
    Ok((records, path.display().to_string()))
}
