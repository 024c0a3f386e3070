//! The layer's own factorized chain, as a backend without a fused forward runs it (the CUDA
//! backend does): merged ends through the primitives (`PreparedTtConv`), then the training
//! forward and backward. `PlainChain` delegates every primitive to the CPU backend but keeps the
//! trait's default `factorized_forward` (the plain chain), so on layers whose plan merges an end
//! the layer-level merged chain runs. Compared with the direct oracle and with the CPU backend.

mod common;

use common::*;
use ndarray::{Array1, Array2, Array3, ArrayD, ArrayViewD};
use rand::SeedableRng;
use rand::rngs::StdRng;
use ttconv::{AxisGeometry, Backend, Implementation, Result};
use ttconv_cpu::{CpuBackend, CpuWeights};

/// The CPU primitives behind the trait's default factorized chain.
struct PlainChain(CpuBackend);

impl Backend for PlainChain {
    type Tensor = ArrayD<f32>;
    type Weights = CpuWeights;

    fn name(&self) -> String {
        "cpu primitives, default chain".into()
    }
    fn upload(&self, x: ArrayViewD<'_, f32>) -> Result<ArrayD<f32>> {
        self.0.upload(x)
    }
    fn download(&self, x: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        self.0.download(x)
    }
    fn shape(&self, x: &ArrayD<f32>) -> Vec<usize> {
        self.0.shape(x)
    }
    fn upload_weights(&self, w: ArrayViewD<'_, f32>) -> Result<CpuWeights> {
        self.0.upload_weights(w)
    }
    fn contract_channels(
        &self,
        x: &ArrayD<f32>,
        w: &CpuWeights,
        bias: Option<&CpuWeights>,
    ) -> Result<ArrayD<f32>> {
        self.0.contract_channels(x, w, bias)
    }
    fn conv_along(
        &self,
        x: &ArrayD<f32>,
        axis: usize,
        core: &CpuWeights,
        g: AxisGeometry,
    ) -> Result<ArrayD<f32>> {
        self.0.conv_along(x, axis, core, g)
    }
    fn conv_dense(
        &self,
        x: &ArrayD<f32>,
        kernel: &CpuWeights,
        bias: Option<&CpuWeights>,
        geometry: &[AxisGeometry],
    ) -> Result<ArrayD<f32>> {
        self.0.conv_dense(x, kernel, bias, geometry)
    }
    fn contract_channels_grad_input(
        &self,
        gy: &ArrayD<f32>,
        w: &CpuWeights,
    ) -> Result<ArrayD<f32>> {
        self.0.contract_channels_grad_input(gy, w)
    }
    fn contract_channels_grad_weight(
        &self,
        x: &ArrayD<f32>,
        gy: &ArrayD<f32>,
    ) -> Result<Array2<f32>> {
        self.0.contract_channels_grad_weight(x, gy)
    }
    fn conv_along_grad_input(
        &self,
        gy: &ArrayD<f32>,
        axis: usize,
        core: &CpuWeights,
        g: AxisGeometry,
        input_len: usize,
    ) -> Result<ArrayD<f32>> {
        self.0.conv_along_grad_input(gy, axis, core, g, input_len)
    }
    fn conv_along_grad_weight(
        &self,
        x: &ArrayD<f32>,
        gy: &ArrayD<f32>,
        axis: usize,
        kernel: usize,
        g: AxisGeometry,
    ) -> Result<Array3<f32>> {
        self.0.conv_along_grad_weight(x, gy, axis, kernel, g)
    }
    fn conv_dense_grad_input(
        &self,
        gy: &ArrayD<f32>,
        kernel: &CpuWeights,
        geometry: &[AxisGeometry],
        input_spatial: &[usize],
    ) -> Result<ArrayD<f32>> {
        self.0
            .conv_dense_grad_input(gy, kernel, geometry, input_spatial)
    }
    fn conv_dense_grad_weight(
        &self,
        x: &ArrayD<f32>,
        gy: &ArrayD<f32>,
        kernel_size: &[usize],
        geometry: &[AxisGeometry],
    ) -> Result<ArrayD<f32>> {
        self.0.conv_dense_grad_weight(x, gy, kernel_size, geometry)
    }
    fn add_bias(&self, y: ArrayD<f32>, bias: &CpuWeights) -> Result<ArrayD<f32>> {
        self.0.add_bias(y, bias)
    }
    fn bias_grad(&self, gy: &ArrayD<f32>) -> Result<Array1<f32>> {
        self.0.bias_grad(gy)
    }
}

#[test]
fn merged_chain_through_primitives_matches_the_oracle_and_the_cpu_backend() {
    let plain = PlainChain(CpuBackend::new());
    let cpu = CpuBackend::new();
    assert!(!plain.merges_factorized_ends());
    assert!(cpu.merges_factorized_ends() || std::env::var_os("TTCONV_CPU_UNFUSED").is_some());
    for (i, (case, (head, tail))) in merge_pattern_cases(200).into_iter().enumerate() {
        let (layer, x) = build(&case);
        let plan = layer.factorized_plan(x.shape());
        assert_eq!((plan.merge_head, plan.merge_tail), (head, tail), "case {i}");
        let expect = oracle_output(&layer, &x);
        let scale = max_abs(&expect).max(output_terms(&layer, &x));

        let y = layer
            .forward_with(&plain, x.view(), Implementation::Factorized)
            .unwrap();
        assert!(
            max_diff(&y, &expect) <= REL_TOL * scale,
            "case {i}: forward"
        );

        let mut rng = StdRng::seed_from_u64(case.seed);
        let gy = random_array(expect.shape(), &mut rng);
        let ours = layer
            .backward(
                &plain,
                x.view(),
                gy.view(),
                Implementation::Factorized,
                true,
            )
            .unwrap();
        let theirs = layer
            .backward(
                &cpu,
                x.view(),
                gy.view(),
                Implementation::Reconstructed,
                true,
            )
            .unwrap();
        let terms = gradient_terms(&cpu, &layer, &x, &gy);
        compare_gradients(&ours, &theirs, &terms).unwrap_or_else(|e| panic!("case {i}: {e}"));
    }
}
