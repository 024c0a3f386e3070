//! Shared helpers of the ttconv-onnx tests: ONNX Runtime when it is installed, small models built
//! in code, and an evaluator of Conv-only graphs on the layer crate's direct oracle.

use std::path::PathBuf;

use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use ttconv_models::{Policy, RankRule, Target};
use ttconv_onnx::conv::{AutoPad, ConvAttrs, ints_attribute};
use ttconv_onnx::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_type, data_type, dimension, type_proto,
};
use ttconv_onnx::{Runtime, Value};

/// Every layer at full rank (tolerance 0), kept even when not smaller: the rewrite must then
/// reproduce the original model.
pub fn full_rank() -> Policy {
    Policy {
        target: Target::PerLayer(RankRule::Tolerance(0.0)),
        require_smaller: false,
        ..Policy::default()
    }
}

/// The repository's `tests/golden/onnx` folder.
pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/onnx")
}

fn find_library() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TTCONV_ONNXRUNTIME").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    // Where `.ci/install-onnxruntime.sh` puts it.
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
    for py in std::fs::read_dir(lib).ok()?.flatten() {
        let capi = py.path().join("site-packages/onnxruntime/capi");
        for f in std::fs::read_dir(capi).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            if name.starts_with("libonnxruntime.so.1.31") {
                return Some(f.path());
            }
        }
    }
    None
}

/// ONNX Runtime, or `None` with a printed reason (a failure instead when
/// `TTCONV_REQUIRE_ONNXRUNTIME=1`, as CI sets once it installed the library).
pub fn runtime(test: &str) -> Option<Runtime> {
    let required = std::env::var("TTCONV_REQUIRE_ONNXRUNTIME").is_ok_and(|v| v == "1");
    let Some(lib) = find_library() else {
        assert!(
            !required,
            "{test}: TTCONV_REQUIRE_ONNXRUNTIME=1 but no ONNX Runtime library was found"
        );
        println!(
            "{test}: skipped: ONNX Runtime not found (run `bash .ci/install-onnxruntime.sh`, or set TTCONV_ONNXRUNTIME to libonnxruntime.so.1.31.*)"
        );
        return None;
    };
    match Runtime::load(&lib, 2) {
        Ok(rt) => Some(rt),
        Err(e) => {
            assert!(!required, "{test}: {e}");
            println!("{test}: skipped: {e}");
            None
        }
    }
}

/// A float tensor value-info with fixed dims.
pub fn value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d as i64)),
                            ..Dimension::default()
                        })
                        .collect(),
                }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}

/// A float value-info without a shape (ONNX Runtime infers it).
pub fn untyped_output(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: data_type::FLOAT,
                shape: None,
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}

/// An f32 initializer.
pub fn initializer(name: &str, values: &ArrayD<f32>) -> TensorProto {
    ttconv_onnx::tensor::from_f32(name, values, ttconv_models::DType::F32).unwrap()
}

/// Standard normal-ish values (uniform in [-1, 1)), seeded.
pub fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.random_range(-1.0f32..1.0))
}

/// The geometry of a generated Conv.
#[derive(Clone, Debug)]
pub struct ConvCase {
    pub batch: usize,
    pub cin: usize,
    pub cout: usize,
    pub kernel: Vec<usize>,
    pub input: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads: Vec<[usize; 2]>,
    pub auto_pad: AutoPad,
    pub bias: bool,
    pub seed: u64,
}

impl ConvCase {
    /// The Conv node's attributes.
    pub fn attributes(&self) -> Vec<AttributeProto> {
        let d = self.kernel.len();
        let mut attrs = vec![
            ints_attribute("kernel_shape", &self.kernel),
            ints_attribute("strides", &self.strides),
            ints_attribute("dilations", &self.dilations),
        ];
        let mode = match self.auto_pad {
            AutoPad::NotSet => {
                let mut p: Vec<usize> = self.pads.iter().map(|p| p[0]).collect();
                p.extend(self.pads.iter().map(|p| p[1]));
                attrs.push(ints_attribute("pads", &p));
                None
            }
            AutoPad::SameUpper => Some("SAME_UPPER"),
            AutoPad::SameLower => Some("SAME_LOWER"),
            AutoPad::Valid => Some("VALID"),
        };
        if let Some(m) = mode {
            attrs.push(AttributeProto {
                name: "auto_pad".into(),
                r#type: attribute_type::STRING,
                s: m.as_bytes().to_vec(),
                ..AttributeProto::default()
            });
        }
        assert_eq!(self.strides.len(), d);
        attrs
    }

    /// The kernel `(cout, cin, k..)`.
    pub fn weight(&self) -> ArrayD<f32> {
        let mut s = vec![self.cout, self.cin];
        s.extend(&self.kernel);
        random(&s, self.seed)
    }

    /// The input `(batch, cin, D..)`.
    pub fn x(&self) -> ArrayD<f32> {
        let mut s = vec![self.batch, self.cin];
        s.extend(&self.input);
        random(&s, self.seed + 1)
    }

    /// A one-Conv model `x -> Conv(x, w[, b]) -> y`.
    pub fn model(&self) -> ModelProto {
        let mut x_shape = vec![self.batch, self.cin];
        x_shape.extend(&self.input);
        let mut inputs = vec!["x".to_string(), "w".to_string()];
        let mut init = vec![initializer("w", &self.weight())];
        if self.bias {
            inputs.push("b".into());
            init.push(initializer("b", &random(&[self.cout], self.seed + 2)));
        }
        model(GraphProto {
            node: vec![NodeProto {
                input: inputs,
                output: vec!["y".into()],
                name: "conv".into(),
                op_type: "Conv".into(),
                attribute: self.attributes(),
                ..NodeProto::default()
            }],
            name: "one_conv".into(),
            initializer: init,
            input: vec![value_info("x", &x_shape)],
            output: vec![untyped_output("y")],
            ..GraphProto::default()
        })
    }
}

/// A model around `graph`: IR 8, opset 17.
pub fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "ttconv-onnx tests".into(),
        graph: Some(graph),
        ..ModelProto::default()
    }
}

/// Evaluates a graph of Conv nodes only (main graph, initializers, one input `x`) on the
/// direct oracle: the reference for the chain without any runtime.
pub fn eval_convs(model: &ModelProto, x: &ArrayD<f32>) -> ArrayD<f32> {
    let g = model.graph.as_ref().unwrap();
    let mut values: std::collections::HashMap<String, ArrayD<f32>> = g
        .initializer
        .iter()
        .map(|t| (t.name.clone(), ttconv_onnx::tensor::to_f32(t).unwrap()))
        .collect();
    values.insert("x".into(), x.clone());
    for node in &g.node {
        assert_eq!(node.op_type, "Conv", "eval_convs runs Conv graphs only");
        let input = &values[&node.input[0]];
        let w = &values[&node.input[1]];
        let attrs = ConvAttrs::parse(node, w.shape()).unwrap();
        let geometry = attrs.resolve(&input.shape()[2..]).unwrap();
        let bias = node.input.get(2).map(|b| {
            values[b]
                .clone()
                .into_dimensionality::<ndarray::Ix1>()
                .unwrap()
        });
        let y = ttconv::oracle::conv_nd(
            input.view(),
            w.view(),
            bias.as_ref().map(|b| b.view()),
            &geometry,
        )
        .unwrap();
        values.insert(node.output[0].clone(), y);
    }
    values[&g.output[0].name].clone()
}

/// `||a - b|| / ||a||`.
pub fn rel_error(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        num += f64::from(x - y).powi(2);
        den += f64::from(*x).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// The f32 output `name` of a run.
pub fn output(outputs: &[(String, Value)], name: &str) -> ArrayD<f32> {
    match &outputs.iter().find(|(n, _)| n == name).unwrap().1 {
        Value::F32(a) => a.clone(),
        other => panic!("output {name} is {other:?}"),
    }
}
