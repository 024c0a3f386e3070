//! The rewrite on whole graphs: shared weights, `Constant` weights, subgraphs, what is skipped
//! and why, and everything else kept as it was.

use crate::common::{
    ConvCase, full_rank, initializer, model, random, rel_error, runtime, untyped_output, value_info,
};
use ttconv_models::{Outcome, Policy, RankRule, Report, ReportOptions, SkipReason, Target};
use ttconv_onnx::conv::{AutoPad, ints_attribute};
use ttconv_onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, StringStringEntryProto, TensorProto,
    attribute_type, data_type,
};
use ttconv_onnx::{Value, compress, model_to_bytes, parameter_count, parse_model};

/// `m` compressed at full rank with the default report options.
fn compress_full(m: &ModelProto) -> (ModelProto, Report) {
    compress(m, &full_rank(), &ReportOptions::default(), &mut |_| {}).unwrap()
}

fn conv(name: &str, x: &str, w: &str, y: &str, strides: &[usize]) -> NodeProto {
    NodeProto {
        input: vec![x.into(), w.into()],
        output: vec![y.into()],
        name: name.into(),
        op_type: "Conv".into(),
        attribute: vec![
            ints_attribute("strides", strides),
            ints_attribute("pads", &[1, 1, 1, 1]),
        ],
        ..NodeProto::default()
    }
}

fn relu(x: &str, y: &str) -> NodeProto {
    NodeProto {
        input: vec![x.into()],
        output: vec![y.into()],
        name: format!("relu_{y}"),
        op_type: "Relu".into(),
        doc_string: "kept as it was".into(),
        ..NodeProto::default()
    }
}

/// One 4x4x3x3 weight read by three Convs of different strides.
fn shared_weight_model() -> ModelProto {
    let w = random(&[4, 4, 3, 3], 7);
    let mut m = model(GraphProto {
        node: vec![
            conv("a", "x", "w", "ya", &[1, 1]),
            relu("ya", "ra"),
            conv("b", "ra", "w", "yb", &[2, 2]),
            conv("c", "ra", "w", "yc", &[1, 2]),
        ],
        name: "shared".into(),
        initializer: vec![initializer("w", &w)],
        input: vec![value_info("x", &[1, 4, 9, 9])],
        output: vec![untyped_output("yb"), untyped_output("yc")],
        value_info: vec![value_info("ra", &[1, 4, 9, 9])],
        doc_string: "a graph doc".into(),
        metadata_props: vec![StringStringEntryProto {
            key: "graph_key".into(),
            value: "graph_value".into(),
        }],
        ..GraphProto::default()
    });
    m.doc_string = "a model doc".into();
    m.model_version = 3;
    m.metadata_props = vec![StringStringEntryProto {
        key: "author".into(),
        value: "tests".into(),
    }];
    m
}

#[test]
fn a_shared_weight_is_decomposed_once_and_its_cores_are_shared() {
    let original = shared_weight_model();
    let (out, report) = compress_full(&original);
    // One row, one decomposition, for the three nodes.
    assert_eq!(report.totals.compressed, 1, "{}", report.to_table());
    assert_eq!(report.layers.len(), 1);
    assert!(
        report.layers[0].name.contains("+2 sharing"),
        "{}",
        report.layers[0].name
    );
    let g = out.graph.as_ref().unwrap();
    // The weight is gone, four cores replace it, and each of the three chains reads them.
    let names: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(!names.contains(&"w"));
    for core in &names {
        let readers = g
            .node
            .iter()
            .filter(|n| n.input.iter().any(|i| i == core))
            .count();
        assert_eq!(readers, 3, "core {core} is read by {readers} nodes");
    }
    // Parameters: the four cores once, not three times.
    let tt_params: usize = report.layers[0].params_after;
    assert_eq!(parameter_count(&out), tt_params);
    // 3 chains of 4 Convs, and the Relu.
    assert_eq!(g.node.len(), 3 * 4 + 1);
    // Everything else as it was.
    assert_eq!(out.doc_string, original.doc_string);
    assert_eq!(out.model_version, 3);
    assert_eq!(out.metadata_props, original.metadata_props);
    assert_eq!(out.opset_import, original.opset_import);
    let og = original.graph.as_ref().unwrap();
    assert_eq!(g.input, og.input);
    assert_eq!(g.output, og.output);
    assert_eq!(g.value_info, og.value_info);
    assert_eq!(g.doc_string, og.doc_string);
    assert_eq!(g.metadata_props, og.metadata_props);
    assert_eq!(g.node.iter().find(|n| n.op_type == "Relu"), og.node.get(1));
    // The file round-trips through the reader.
    assert_eq!(parse_model(&model_to_bytes(&out)).unwrap(), out);

    let Some(rt) = runtime("a_shared_weight_is_decomposed_once_and_its_cores_are_shared") else {
        return;
    };
    let feed = vec![("x".to_string(), Value::F32(random(&[1, 4, 9, 9], 8)))];
    let want = rt.run(&model_to_bytes(&original), &feed).unwrap();
    let got = rt.run(&model_to_bytes(&out), &feed).unwrap();
    for name in ["yb", "yc"] {
        let e = rel_error(
            &crate::common::output(&want, name),
            &crate::common::output(&got, name),
        );
        assert!(e < 1e-5, "{name}: {e:.3e}");
    }
}

#[test]
fn a_weight_in_a_constant_node_is_compressed_and_the_constant_removed() {
    let c = ConvCase {
        batch: 1,
        cin: 3,
        cout: 5,
        kernel: vec![3, 2],
        input: vec![6, 7],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![[1, 0], [0, 1]],
        auto_pad: AutoPad::NotSet,
        bias: true,
        seed: 3,
    };
    let mut m = c.model();
    let g = m.graph.as_mut().unwrap();
    let w = g.initializer.remove(0);
    assert_eq!(w.name, "w");
    g.node.insert(
        0,
        NodeProto {
            output: vec!["w".into()],
            name: "weight_constant".into(),
            op_type: "Constant".into(),
            attribute: vec![AttributeProto {
                name: "value".into(),
                r#type: attribute_type::TENSOR,
                t: Some(w),
                ..AttributeProto::default()
            }],
            ..NodeProto::default()
        },
    );
    let (out, report) = compress_full(&m);
    assert_eq!(report.totals.compressed, 1);
    let g = out.graph.as_ref().unwrap();
    assert!(
        g.node.iter().all(|n| n.op_type == "Conv"),
        "the Constant is gone"
    );
    // Cores land in the graph's initializers; the bias stays.
    assert_eq!(g.initializer.len(), 4 + 1);
    let x = c.x();
    let e = rel_error(
        &crate::common::eval_convs(&c.model(), &x),
        &crate::common::eval_convs(&out, &x),
    );
    assert!(e < 1e-5, "{e:.3e}");
}

#[test]
fn grouped_convs_and_overridable_weights_are_kept_with_their_reason() {
    let mut c = ConvCase {
        batch: 1,
        cin: 2,
        cout: 4,
        kernel: vec![3, 3],
        input: vec![5, 5],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![[1, 1], [1, 1]],
        auto_pad: AutoPad::NotSet,
        bias: false,
        seed: 1,
    };
    // group 2: W (4, 1, 3, 3) for 2 input channels.
    c.cin = 1;
    let mut grouped = c.model();
    c.cin = 2;
    let g = grouped.graph.as_mut().unwrap();
    g.node[0].attribute.push(AttributeProto {
        name: "group".into(),
        r#type: attribute_type::INT,
        i: 2,
        ..AttributeProto::default()
    });
    g.input[0] = value_info("x", &[1, 2, 5, 5]);
    let (out, report) = compress_full(&grouped);
    assert_eq!(out, grouped, "nothing rewritten");
    assert!(matches!(
        &report.layers[0].outcome,
        Outcome::Skipped {
            reason: SkipReason::Grouped { group: 2 }
        }
    ));

    // A weight that is also a graph input can be replaced by the caller: not a constant.
    let mut overridable = c.model();
    let g = overridable.graph.as_mut().unwrap();
    g.input.push(value_info("w", &[4, 2, 3, 3]));
    let (out, report) = compress_full(&overridable);
    assert_eq!(out, overridable);
    assert!(matches!(
        &report.layers[0].outcome,
        Outcome::Skipped {
            reason: SkipReason::NotConstant
        }
    ));
}

/// `If` with a Conv in each branch, both reading a weight of the main graph.
fn if_model() -> ModelProto {
    let w = random(&[3, 3, 3, 3], 11);
    let branch = |name: &str, stride: usize| GraphProto {
        node: vec![conv(
            &format!("{name}_conv"),
            "x",
            "w",
            &format!("{name}_y"),
            &[stride, stride],
        )],
        name: name.into(),
        output: vec![untyped_output(&format!("{name}_y"))],
        ..GraphProto::default()
    };
    let graph_attr = |name: &str, g: GraphProto| AttributeProto {
        name: name.into(),
        r#type: attribute_type::GRAPH,
        g: Some(Box::new(g)),
        ..AttributeProto::default()
    };
    let mut cond = value_info("cond", &[]);
    if let Some(ttconv_onnx::proto::type_proto::Value::TensorType(t)) =
        cond.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = data_type::BOOL;
    }
    model(GraphProto {
        node: vec![NodeProto {
            input: vec!["cond".into()],
            output: vec!["y".into()],
            name: "if".into(),
            op_type: "If".into(),
            attribute: vec![
                graph_attr("then_branch", branch("then", 1)),
                graph_attr("else_branch", branch("else", 2)),
            ],
            ..NodeProto::default()
        }],
        name: "with_if".into(),
        initializer: vec![initializer("w", &w)],
        input: vec![value_info("x", &[1, 3, 8, 8]), cond],
        output: vec![untyped_output("y")],
        ..GraphProto::default()
    })
}

#[test]
fn convs_inside_if_branches_are_compressed_with_the_cores_in_the_enclosing_graph() {
    let original = if_model();
    let (out, report) = compress_full(&original);
    assert_eq!(report.totals.compressed, 1, "{}", report.to_table());
    let g = out.graph.as_ref().unwrap();
    assert_eq!(g.initializer.len(), 4, "the cores, in the main graph");
    for attr in &g.node[0].attribute {
        let branch = attr.g.as_ref().unwrap();
        assert_eq!(branch.node.len(), 4, "{} holds a chain", attr.name);
        assert!(branch.initializer.is_empty());
    }
    let Some(rt) = runtime("convs_inside_if_branches_are_compressed") else {
        return;
    };
    for cond in [true, false] {
        // The runner feeds numeric tensors only: the condition becomes a Constant of each copy.
        let fixed = |m: &ModelProto| {
            let mut m = m.clone();
            let g = m.graph.as_mut().unwrap();
            g.input.retain(|v| v.name != "cond");
            g.node.insert(
                0,
                NodeProto {
                    output: vec!["cond".into()],
                    name: "cond_constant".into(),
                    op_type: "Constant".into(),
                    attribute: vec![AttributeProto {
                        name: "value".into(),
                        r#type: attribute_type::TENSOR,
                        t: Some(TensorProto {
                            data_type: data_type::BOOL,
                            raw_data: vec![u8::from(cond)],
                            name: "cond".into(),
                            ..TensorProto::default()
                        }),
                        ..AttributeProto::default()
                    }],
                    ..NodeProto::default()
                },
            );
            model_to_bytes(&m)
        };
        let feed = vec![("x".to_string(), Value::F32(random(&[1, 3, 8, 8], 12)))];
        let want = crate::common::output(&rt.run(&fixed(&original), &feed).unwrap(), "y");
        let got = crate::common::output(&rt.run(&fixed(&out), &feed).unwrap(), "y");
        let e = rel_error(&want, &got);
        assert!(e < 1e-5, "cond {cond}: {e:.3e}");
    }
}

/// A graph output that is also a graph input (legal ONNX) comes back as the input, not as a
/// read through the null data pointer ONNX Runtime hands back for it.
#[test]
fn a_graph_input_that_is_also_an_output_is_read_back() {
    let Some(rt) = runtime("a_graph_input_that_is_also_an_output_is_read_back") else {
        return;
    };
    let mut m = shared_weight_model();
    m.graph.as_mut().unwrap().output.push(untyped_output("x"));
    let x = random(&[1, 4, 9, 9], 30);
    let outputs = rt
        .run(
            &model_to_bytes(&m),
            &[("x".to_string(), Value::F32(x.clone()))],
        )
        .unwrap();
    assert_eq!(crate::common::output(&outputs, "x"), x);
}

/// With the Conv input shapes known, each layer's MACs are modelled at its own size, and
/// `require_faster` keeps dense what the cost model runs faster dense.
#[test]
fn input_shapes_give_exact_macs_and_the_speed_rule() {
    let m = shared_weight_model();
    let shapes = ttconv_onnx::InputShapes::from([
        ("x".to_string(), vec![1, 4, 9, 9]),
        ("ra".to_string(), vec![1, 4, 9, 9]),
    ]);
    // Full rank is never faster than dense: kept, with the reason.
    let policy = Policy {
        require_faster: true,
        ..full_rank()
    };
    let (out, report) =
        ttconv_onnx::compress_at(&m, &policy, &ReportOptions::default(), &shapes, &mut |_| {})
            .unwrap();
    assert_eq!(out, m, "{}", report.to_table());
    assert!(matches!(
        &report.layers[0].outcome,
        Outcome::Skipped { reason: SkipReason::Slower { dense_macs, factorized_macs } }
            if factorized_macs > dense_macs
    ));
    // Rank 1: compressed, with MACs at the given size and the geometry not assumed.
    let policy = Policy {
        target: Target::PerLayer(RankRule::parse("1").unwrap()),
        require_faster: true,
        ..Policy::default()
    };
    let (_, report) =
        ttconv_onnx::compress_at(&m, &policy, &ReportOptions::default(), &shapes, &mut |_| {})
            .unwrap();
    match &report.layers[0].outcome {
        Outcome::Compressed {
            macs: Some(macs), ..
        } => {
            assert_eq!(macs.input_spatial, vec![9, 9]);
            assert!(!macs.geometry_assumed);
            // 4x4x3x3 at 9x9, stride 1, pads 1: 4*4*9 taps * 81 positions.
            assert_eq!(macs.dense, 4 * 4 * 9 * 81);
        }
        other => panic!("{other:?}"),
    }
}

/// A 5-D convolution (beyond the layer's 4 spatial modes) is kept with its reason, not an error
/// for the whole model.
#[test]
fn a_conv_of_five_spatial_modes_is_kept() {
    let c = ConvCase {
        batch: 1,
        cin: 2,
        cout: 2,
        kernel: vec![2, 1, 1, 1, 1],
        input: vec![3, 2, 2, 2, 2],
        strides: vec![1; 5],
        dilations: vec![1; 5],
        pads: vec![[0, 0]; 5],
        auto_pad: AutoPad::NotSet,
        bias: false,
        seed: 4,
    };
    let m = c.model();
    let (out, report) = compress_full(&m);
    assert_eq!(out, m);
    assert!(matches!(
        &report.layers[0].outcome,
        Outcome::Skipped {
            reason: SkipReason::TooManyModes { order: 5 }
        }
    ));
}

/// `If` whose branches each hold their own initializer named `w` (and the main graph a third):
/// three different tensors behind one name, so three decompositions, each branch's chain reading
/// the cores of its own weight.
#[test]
fn weights_are_told_apart_by_their_definition_not_their_name() {
    let mut m = if_model();
    let g = m.graph.as_mut().unwrap();
    // A main-graph Conv reads the outer `w`.
    g.node.push(conv("outer", "x", "w", "y_outer", &[1, 1]));
    g.output.push(untyped_output("y_outer"));
    for (k, attr) in g.node[0].attribute.iter_mut().enumerate() {
        let branch = attr.g.as_mut().unwrap();
        branch
            .initializer
            .push(initializer("w", &random(&[3, 3, 3, 3], 100 + k as u64)));
    }
    let (out, report) = compress_full(&m);
    assert_eq!(report.totals.compressed, 3, "{}", report.to_table());
    let g = out.graph.as_ref().unwrap();
    for attr in &g.node[0].attribute {
        let branch = attr.g.as_ref().unwrap();
        let own: Vec<&str> = branch.initializer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            own.len(),
            4,
            "{}: its own 4 cores, the branch's `w` gone: {own:?}",
            attr.name
        );
        for node in &branch.node {
            assert!(
                own.contains(&node.input[1].as_str()),
                "{} reads {}",
                node.name,
                node.input[1]
            );
        }
    }
    // The outer chain reads the outer cores.
    let outer_cores: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let outer_chain: Vec<&NodeProto> = g
        .node
        .iter()
        .filter(|n| n.name.starts_with("outer/"))
        .collect();
    assert_eq!(outer_chain.len(), 4);
    for node in outer_chain {
        assert!(outer_cores.contains(&node.input[1].as_str()));
    }
    // Each chain reproduces its own kernel: evaluate the outer one on the oracle.
    let x = random(&[1, 3, 8, 8], 5);
    let only_outer = |m: &ModelProto| {
        let mut m = m.clone();
        let g = m.graph.as_mut().unwrap();
        g.node.retain(|n| n.op_type == "Conv");
        g.output = vec![untyped_output("y_outer")];
        m
    };
    let e = rel_error(
        &crate::common::eval_convs(&only_outer(&m), &x),
        &crate::common::eval_convs(&only_outer(&out), &x),
    );
    assert!(e < 1e-5, "{e:.3e}");
}

/// A Conv whose weight name is, in its own graph, a non-constant (a subgraph input) is not
/// matched to an outer initializer of the same name.
#[test]
fn an_inner_non_constant_definition_hides_an_outer_constant() {
    let mut m = if_model();
    let g = m.graph.as_mut().unwrap();
    let branch = g.node[0].attribute[0].g.as_mut().unwrap();
    branch.input.push(value_info("w", &[3, 3, 3, 3]));
    let (_, report) = compress_full(&m);
    let kept = report
        .layers
        .iter()
        .filter(|l| {
            matches!(
                &l.outcome,
                Outcome::Skipped {
                    reason: SkipReason::NotConstant
                }
            )
        })
        .count();
    assert_eq!(kept, 1, "{}", report.to_table());
}
