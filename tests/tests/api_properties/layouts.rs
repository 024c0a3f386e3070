//! Every memory layout ndarray can express for an input of a given logical value: row-major,
//! column-major, permuted axes, strided (every other element), reversed (negative strides) and
//! broadcast (stride 0 along an axis).

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, ShapeBuilder, Slice};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
pub enum Layout {
    Standard,
    Fortran,
    /// Axes stored in a rotated order (`rotate_left(by)`), viewed back in logical order.
    Permuted {
        by: usize,
    },
    /// Every other element of a buffer twice as long on each axis.
    Strided,
    /// Stored back to front on every axis, viewed with negative strides.
    Reversed,
    /// One slice along `axis` (taken modulo the rank), repeated with stride 0.
    Broadcast {
        axis: usize,
    },
}

pub fn layout_strategy() -> impl Strategy<Value = Layout> {
    prop_oneof![
        Just(Layout::Standard),
        Just(Layout::Fortran),
        (1..6usize).prop_map(|by| Layout::Permuted { by }),
        Just(Layout::Strided),
        Just(Layout::Reversed),
        (0..6usize).prop_map(|axis| Layout::Broadcast { axis }),
    ]
}

/// A buffer laid out as [`Layout`] says, whose [`Laid::view`] has the logical shape asked for.
#[derive(Debug)]
pub struct Laid {
    storage: ArrayD<f32>,
    layout: Layout,
    shape: Vec<usize>,
}

impl Laid {
    /// Lays out `x`; for [`Layout::Broadcast`] the value is `x`'s first slice along the axis,
    /// repeated (read it back with [`Laid::logical`]).
    pub fn new(x: &ArrayD<f32>, layout: Layout) -> Self {
        let shape = x.shape().to_vec();
        let nd = shape.len();
        let storage = match layout {
            Layout::Standard => x.as_standard_layout().into_owned(),
            Layout::Fortran => {
                let mut f = ArrayD::<f32>::zeros(IxDyn(&shape).f());
                f.assign(x);
                f
            }
            Layout::Permuted { by } => x
                .view()
                .permuted_axes(IxDyn(&rotation(nd, by)))
                .as_standard_layout()
                .into_owned(),
            Layout::Strided => {
                let doubled: Vec<usize> = shape.iter().map(|&n| 2 * n).collect();
                let mut big = ArrayD::<f32>::from_elem(IxDyn(&doubled), f32::NAN);
                big.slice_each_axis_mut(|_| Slice::new(0, None, 2))
                    .assign(x);
                big
            }
            Layout::Reversed => {
                let mut v = x.view();
                for a in 0..nd {
                    v.invert_axis(Axis(a));
                }
                // Row-major memory (`to_owned` would keep the negative strides).
                v.as_standard_layout().into_owned()
            }
            Layout::Broadcast { axis } => {
                let a = axis % nd.max(1);
                x.slice_axis(Axis(a), Slice::from(0..1.min(shape[a])))
                    .to_owned()
            }
        };
        Self {
            storage,
            layout,
            shape,
        }
    }

    /// The view the API is given.
    pub fn view(&self) -> ArrayViewD<'_, f32> {
        let nd = self.shape.len();
        match self.layout {
            Layout::Standard | Layout::Fortran => self.storage.view(),
            Layout::Permuted { by } => {
                let r = rotation(nd, by);
                let mut inverse = vec![0; nd];
                for (i, &p) in r.iter().enumerate() {
                    inverse[p] = i;
                }
                self.storage.view().permuted_axes(IxDyn(&inverse))
            }
            Layout::Strided => self.storage.slice_each_axis(|_| Slice::new(0, None, 2)),
            Layout::Reversed => {
                let mut v = self.storage.view();
                for a in 0..nd {
                    v.invert_axis(Axis(a));
                }
                v
            }
            Layout::Broadcast { .. } => self
                .storage
                .broadcast(IxDyn(&self.shape))
                .expect("a length-1 axis broadcasts"),
        }
    }

    /// The value of [`Laid::view`] as a row-major array.
    pub fn logical(&self) -> ArrayD<f32> {
        self.view().as_standard_layout().into_owned()
    }
}

/// `(0..nd)` rotated left by `by`.
fn rotation(nd: usize, by: usize) -> Vec<usize> {
    let mut r: Vec<usize> = (0..nd).collect();
    if nd > 0 {
        r.rotate_left(by % nd);
    }
    r
}

/// A view of logical shape `shape` over a single element (stride 0 on every axis), so that
/// shapes far too large to allocate can be handed to the API; `None` when ndarray cannot
/// express it (more than `isize::MAX` elements).
pub fn broadcast_ones<'a>(
    storage: &'a ArrayD<f32>,
    shape: &[usize],
) -> Option<ArrayViewD<'a, f32>> {
    storage.broadcast(IxDyn(shape))
}

/// One element of rank `nd`, for [`broadcast_ones`].
pub fn one_element(nd: usize) -> ArrayD<f32> {
    ArrayD::<f32>::ones(IxDyn(&vec![1; nd]))
}

/// The layouts are what they say: same values, and (on a shape where it can differ) not
/// row-major, with the strides expected.
#[test]
fn layouts_hold_the_value_with_their_strides() {
    let x = ArrayD::from_shape_fn(IxDyn(&[2, 3, 4, 5]), |i| {
        (i[0] * 1000 + i[1] * 100 + i[2] * 10 + i[3]) as f32
    });
    for layout in [
        Layout::Standard,
        Layout::Fortran,
        Layout::Permuted { by: 1 },
        Layout::Permuted { by: 3 },
        Layout::Strided,
        Layout::Reversed,
        Layout::Broadcast { axis: 2 },
    ] {
        let laid = Laid::new(&x, layout);
        let v = laid.view();
        assert_eq!(v.shape(), x.shape());
        let strides = v.strides().to_vec();
        match layout {
            Layout::Standard => assert_eq!(v, x.view()),
            Layout::Fortran => assert_eq!(strides, [1, 2, 6, 24]),
            Layout::Permuted { .. } => assert!(!v.is_standard_layout() && v == x.view()),
            Layout::Strided => assert_eq!((strides, v == x.view()), (vec![960, 160, 20, 2], true)),
            Layout::Reversed => assert!(strides.iter().all(|&s| s < 0) && v == x.view()),
            Layout::Broadcast { axis } => {
                assert_eq!(strides[axis], 0);
                for i in 0..4 {
                    assert_eq!(v.index_axis(Axis(2), i), x.index_axis(Axis(2), 0));
                }
            }
        }
        if !matches!(layout, Layout::Broadcast { .. }) {
            assert_eq!(laid.logical(), x);
        }
    }
}
