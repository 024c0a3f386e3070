//! Malformed and hostile ONNX files give errors, never panics.

use crate::common::{ConvCase, golden_dir};
use proptest::prelude::*;
use ttconv_models::{Policy, ReportOptions};
use ttconv_onnx::conv::AutoPad;
use ttconv_onnx::proto::{AttributeProto, GraphProto, NodeProto, attribute_type};
use ttconv_onnx::{Error, compress, model_to_bytes, parse_model};

fn case() -> ConvCase {
    ConvCase {
        batch: 1,
        cin: 3,
        cout: 4,
        kernel: vec![3, 3],
        input: vec![6, 6],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![[1, 1], [1, 1]],
        auto_pad: AutoPad::NotSet,
        bias: true,
        seed: 5,
    }
}

/// Parses and, when that succeeds, compresses: either step may refuse, neither may panic.
fn parse_and_compress(bytes: &[u8]) -> Result<(), Error> {
    let m = parse_model(bytes)?;
    compress(
        &m,
        &Policy::default(),
        &ReportOptions::default(),
        &mut |_| {},
    )?;
    Ok(())
}

fn invalid(result: Result<(), Error>, needle: &str) {
    match result {
        Err(Error::Invalid { what, reason }) => assert!(
            format!("{what}: {reason}").contains(needle),
            "`{what}: {reason}` does not mention `{needle}`"
        ),
        other => panic!("expected an Invalid error about `{needle}`, got {other:?}"),
    }
}

#[test]
fn every_truncation_of_a_model_is_an_error_or_a_smaller_model() {
    let small = model_to_bytes(&case().model());
    for n in 0..small.len() {
        // Either refused, or a prefix that happens to end on a field boundary: both fine.
        let _ = parse_and_compress(&small[..n]);
    }
    // Truncations of a real model fail with an error (most) or decode a smaller graph.
    let real = std::fs::read(golden_dir().join("basic-pitch-0.4.0/nmp.onnx")).unwrap();
    let mut refused = 0;
    for n in (0..real.len()).step_by(997) {
        if parse_and_compress(&real[..n]).is_err() {
            refused += 1;
        }
    }
    assert!(refused > 0);
    assert!(
        matches!(parse_model(&[]), Err(Error::Invalid { .. })),
        "empty: no graph"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random bytes, and a valid model with random bytes overwritten.
    #[test]
    fn random_and_corrupted_bytes_never_panic(
        noise in proptest::collection::vec(any::<u8>(), 0..512),
        at in any::<proptest::sample::Index>(),
    ) {
        let _ = parse_and_compress(&noise);
        let mut bytes = model_to_bytes(&case().model());
        let start = at.index(bytes.len());
        for (i, b) in noise.iter().take(16).enumerate() {
            if let Some(slot) = bytes.get_mut(start + i) {
                *slot = *b;
            }
        }
        let _ = parse_and_compress(&bytes);
    }
}

#[test]
fn a_conv_naming_a_missing_weight_is_an_error() {
    let mut m = case().model();
    m.graph
        .as_mut()
        .unwrap()
        .initializer
        .retain(|t| t.name != "w");
    invalid(parse_and_compress(&model_to_bytes(&m)), "reads \"w\"");
}

#[test]
fn a_weight_of_the_wrong_rank_is_an_error() {
    let mut m = case().model();
    let g = m.graph.as_mut().unwrap();
    g.initializer[0].dims = vec![4, 27];
    invalid(
        parse_and_compress(&model_to_bytes(&m)),
        "(out, in/group, k_1..k_d)",
    );
}

#[test]
fn inconsistent_attributes_and_data_are_errors() {
    let with_attr = |name: &str, ints: Vec<i64>| {
        let mut m = case().model();
        let node = &mut m.graph.as_mut().unwrap().node[0];
        node.attribute.retain(|a| a.name != name);
        node.attribute.push(AttributeProto {
            name: name.into(),
            r#type: attribute_type::INTS,
            ints,
            ..AttributeProto::default()
        });
        model_to_bytes(&m)
    };
    invalid(
        parse_and_compress(&with_attr("kernel_shape", vec![3, 2])),
        "kernel_shape",
    );
    invalid(
        parse_and_compress(&with_attr("pads", vec![1, 1, 1])),
        "pads",
    );
    invalid(
        parse_and_compress(&with_attr("pads", vec![1, -1, 1, 1])),
        "pads",
    );
    invalid(
        parse_and_compress(&with_attr("strides", vec![0, 1])),
        "strides",
    );
    invalid(
        parse_and_compress(&with_attr("dilations", vec![1])),
        "dilations",
    );

    // group 3 does not divide 4 output channels.
    let mut m = case().model();
    m.graph.as_mut().unwrap().node[0]
        .attribute
        .push(AttributeProto {
            name: "group".into(),
            r#type: attribute_type::INT,
            i: 3,
            ..AttributeProto::default()
        });
    invalid(parse_and_compress(&model_to_bytes(&m)), "group 3");

    // raw_data shorter than the dims.
    let mut m = case().model();
    m.graph.as_mut().unwrap().initializer[0]
        .raw_data
        .truncate(10);
    invalid(parse_and_compress(&model_to_bytes(&m)), "raw_data holds 10");

    // A negative dim.
    let mut m = case().model();
    m.graph.as_mut().unwrap().initializer[0].dims[0] = -4;
    invalid(parse_and_compress(&model_to_bytes(&m)), "dim is >= 0");

    // Dims whose product overflows.
    let mut m = case().model();
    m.graph.as_mut().unwrap().initializer[0].dims = vec![i64::MAX, i64::MAX, 3, 3];
    invalid(parse_and_compress(&model_to_bytes(&m)), "overflow");

    // Weights in an external file are refused, not read from a path the file names.
    let mut m = case().model();
    let w = &mut m.graph.as_mut().unwrap().initializer[0];
    w.raw_data.clear();
    w.data_location = 1;
    assert!(matches!(
        parse_and_compress(&model_to_bytes(&m)),
        Err(Error::Unsupported(_))
    ));

    // A value defined twice.
    let mut m = case().model();
    let g = m.graph.as_mut().unwrap();
    let copy = g.node[0].clone();
    g.node.push(copy);
    invalid(
        parse_and_compress(&model_to_bytes(&m)),
        "defined more than once",
    );
}

#[test]
fn deeply_nested_subgraphs_are_refused_without_overflowing_the_stack() {
    // 300 nested If branches: beyond the decoder's recursion limit.
    let mut g = GraphProto::default();
    for _ in 0..300 {
        g = GraphProto {
            node: vec![NodeProto {
                op_type: "If".into(),
                attribute: vec![AttributeProto {
                    name: "then_branch".into(),
                    r#type: attribute_type::GRAPH,
                    g: Some(Box::new(g)),
                    ..AttributeProto::default()
                }],
                ..NodeProto::default()
            }],
            ..GraphProto::default()
        };
    }
    let m = crate::common::model(g);
    let bytes = model_to_bytes(&m);
    assert!(matches!(parse_model(&bytes), Err(Error::Decode(_))));
}

/// Inputs a review found could panic: each is now an error or a graph handled as valid.
#[test]
fn review_cases_are_errors_or_handled_not_panics() {
    // A Constant weight with two `value` attributes (the first not a tensor): not a constant.
    let mut m = case().model();
    let g = m.graph.as_mut().unwrap();
    let w = g.initializer.remove(0);
    g.node.insert(
        0,
        NodeProto {
            output: vec!["w".into()],
            op_type: "Constant".into(),
            attribute: vec![
                AttributeProto {
                    name: "value".into(),
                    r#type: attribute_type::FLOAT,
                    f: 1.0,
                    ..AttributeProto::default()
                },
                AttributeProto {
                    name: "value".into(),
                    r#type: attribute_type::TENSOR,
                    t: Some(w),
                    ..AttributeProto::default()
                },
            ],
            ..NodeProto::default()
        },
    );
    assert!(parse_and_compress(&model_to_bytes(&m)).is_ok());

    // A Conv with no output is not rewritten.
    let mut m = case().model();
    let g = m.graph.as_mut().unwrap();
    g.node[0].output.clear();
    g.output.clear();
    assert!(parse_and_compress(&model_to_bytes(&m)).is_ok());

    // Dims whose byte count overflows, with a few bytes of raw data.
    let mut m = case().model();
    let w = &mut m.graph.as_mut().unwrap().initializer[0];
    w.dims = vec![4611686018427387905, 1, 1, 1];
    w.raw_data = vec![0; 4];
    let _ = parse_and_compress(&model_to_bytes(&m)).unwrap_err();

    // An unread initializer with enormous dims (never decoded): the totals saturate.
    let mut m = case().model();
    let g = m.graph.as_mut().unwrap();
    let mut huge = g.initializer[0].clone();
    huge.name = "unused".into();
    huge.dims = vec![1 << 32, 1 << 32, 4];
    g.initializer.push(huge);
    assert!(parse_and_compress(&model_to_bytes(&m)).is_ok());

    // A dilation whose dilated extent overflows, with SAME padding.
    let mut m = case().model();
    let node = &mut m.graph.as_mut().unwrap().node[0];
    node.attribute
        .retain(|a| a.name != "pads" && a.name != "dilations");
    node.attribute.push(ttconv_onnx::conv::ints_attribute(
        "dilations",
        &[1 << 62, 1],
    ));
    node.attribute.push(AttributeProto {
        name: "auto_pad".into(),
        r#type: attribute_type::STRING,
        s: b"SAME_UPPER".to_vec(),
        ..AttributeProto::default()
    });
    invalid(
        parse_and_compress(&model_to_bytes(&m)),
        "dilated extent overflows",
    );
}
