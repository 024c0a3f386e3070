//! Case specs: one layer shape to time ([`CaseSpec`]), parsed from `--case SPEC`
//! ([`CASE_FORMAT`]), and the text forms of its fields used in tables and JSON.

use ttconv::{Padding, RankSpec, TtConvConfig};

/// The `--case` format, printed by `cargo xtask bench --help`.
pub const CASE_FORMAT: &str = "\
--case SPEC (conv part; repeatable; replaces the default suite): comma-separated key=value
  b=N          batch (default 1)
  c=IN[:OUT]   input channels, and output channels (default OUT = IN)           [required]
  s=D1xD2..    input spatial size; its length is the order d (1-D: s=4096)      [required]
  k=K|K1xK2..  kernel size, one value for every mode or one per mode            [required]
  stride=S|S1xS2..   (default 1)      dil=D|D1xD2..   dilation (default 1)
  pad=P|P1xP2..|same zero padding on both sides (default 0; `same` as PyTorch)
  rank=R       TT rank spec (default same): `same`; a float fraction of the dense parameter
               count (0.1); an int r for ranks 1-r-..-r-1 (16); or every rank, 1-16-16-16-1
  name=TEXT    label in the table and JSON (default derived from the shape)
  e.g. --case \"b=8,c=64:128,s=56x56,k=3x3,stride=2,pad=1,dil=1,rank=16\"";

/// One layer shape to time.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseSpec {
    /// Name (in the table and the JSON).
    pub name: String,
    /// Batch size.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Input spatial size; its length is the order.
    pub spatial: Vec<usize>,
    /// Kernel size per mode.
    pub kernel: Vec<usize>,
    /// Stride per mode.
    pub stride: Vec<usize>,
    /// Padding.
    pub padding: Padding,
    /// Dilation per mode.
    pub dilation: Vec<usize>,
    /// TT rank spec on `(in, k.., out)`.
    pub rank: RankSpec,
}

/// The rank spec as `--case` writes it (`same`, `0.1`, `16`, `1-16-16-16-1`).
pub fn rank_text(r: &RankSpec) -> String {
    match r {
        RankSpec::Same => "same".into(),
        RankSpec::Fraction(f) => format!("{f}"),
        RankSpec::Uniform(r) => r.to_string(),
        RankSpec::Explicit(v) => dashed(v),
    }
}

/// `[1, 16, 1]` as `1-16-1`.
pub fn dashed(v: &[usize]) -> String {
    v.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

/// `[56, 56]` as `56x56`.
pub fn crossed(v: &[usize]) -> String {
    v.iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// The padding as `--case` writes it (`1`, `1x2`, `0:1x1:0`, `same`).
pub fn padding_text(p: &Padding) -> String {
    match p {
        Padding::All(p) => p.to_string(),
        Padding::Each(v) => crossed(v),
        Padding::Asymmetric(v) => v
            .iter()
            .map(|(a, b)| format!("{a}:{b}"))
            .collect::<Vec<_>>()
            .join("x"),
        Padding::Same => "same".into(),
    }
}

fn parse_list(key: &str, v: &str) -> Result<Vec<usize>, String> {
    v.split('x')
        .map(|t| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{key}={v}`: expected integers separated by `x`"))
        })
        .collect()
}

/// One value per mode, broadcasting a single value.
fn per_mode(key: &str, v: Vec<usize>, order: usize) -> Result<Vec<usize>, String> {
    match v.len() {
        1 => Ok(vec![v[0]; order]),
        n if n == order => Ok(v),
        n => Err(format!(
            "`{key}` has {n} values, the spatial size has {order} modes"
        )),
    }
}

/// Parses a `rank=` value ([`CASE_FORMAT`]).
pub fn parse_rank(v: &str) -> Result<RankSpec, String> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("same") {
        Ok(RankSpec::Same)
    } else if v.contains('-') {
        let ranks = v
            .split('-')
            .map(|t| t.parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format!("`rank={v}`: expected ranks separated by `-`"))?;
        Ok(RankSpec::Explicit(ranks))
    } else if let Ok(r) = v.parse::<usize>() {
        Ok(RankSpec::Uniform(r))
    } else if let Ok(f) = v.parse::<f64>() {
        if f > 0.0 && f.is_finite() {
            Ok(RankSpec::Fraction(f))
        } else {
            Err(format!("`rank={v}`: a fraction must be positive"))
        }
    } else {
        Err(format!(
            "`rank={v}`: expected `same`, a fraction, an int or ranks like 1-16-16-16-1"
        ))
    }
}

impl CaseSpec {
    /// Parses a `--case` spec ([`CASE_FORMAT`]).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut kv = std::collections::BTreeMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}`: expected key=value"))?;
            let k = k.trim().to_ascii_lowercase();
            let known = ["b", "c", "s", "k", "stride", "pad", "dil", "rank", "name"];
            if !known.contains(&k.as_str()) {
                return Err(format!("unknown key `{k}` (keys: {})", known.join(", ")));
            }
            if kv.insert(k.clone(), v.trim().to_string()).is_some() {
                return Err(format!("`{k}` given twice"));
            }
        }
        let need = |k: &str| {
            kv.get(k)
                .cloned()
                .ok_or_else(|| format!("`{k}=` is required"))
        };
        let spatial = parse_list("s", &need("s")?)?;
        let order = spatial.len();
        let c = need("c")?;
        let (cin, cout) = match c.split_once(':') {
            Some((a, b)) => (a, b),
            None => (c.as_str(), c.as_str()),
        };
        let channel = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("`c={c}`: expected IN or IN:OUT"))
        };
        let opt_list = |k: &str, default: usize| -> Result<Vec<usize>, String> {
            match kv.get(k) {
                Some(v) => per_mode(k, parse_list(k, v)?, order),
                None => Ok(vec![default; order]),
            }
        };
        let padding = match kv.get("pad") {
            Some(v) if v.eq_ignore_ascii_case("same") => Padding::Same,
            Some(v) => Padding::Each(per_mode("pad", parse_list("pad", v)?, order)?),
            None => Padding::All(0),
        };
        let batch = match kv.get("b") {
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|&b| b > 0)
                .ok_or_else(|| format!("`b={v}`: expected a positive integer"))?,
            None => 1,
        };
        let mut case = CaseSpec {
            name: String::new(),
            batch,
            in_channels: channel(cin)?,
            out_channels: channel(cout)?,
            kernel: per_mode("k", parse_list("k", &need("k")?)?, order)?,
            spatial,
            stride: opt_list("stride", 1)?,
            padding,
            dilation: opt_list("dil", 1)?,
            rank: match kv.get("rank") {
                Some(v) => parse_rank(v)?,
                None => RankSpec::Same,
            },
        };
        case.name = match kv.get("name") {
            Some(n) => n.clone(),
            None => case.derived_name(),
        };
        let geometry = case.config().validate().map_err(|e| e.to_string())?;
        ttconv::output_spatial(&case.spatial, &case.kernel, &geometry)
            .map_err(|e| e.to_string())?;
        Ok(case)
    }

    fn derived_name(&self) -> String {
        let mut n = format!("{}d_c{}", self.spatial.len(), self.in_channels);
        if self.out_channels != self.in_channels {
            n += &format!("to{}", self.out_channels);
        }
        n += &format!("_s{}_k{}", crossed(&self.spatial), crossed(&self.kernel));
        if self.stride.iter().any(|&s| s != 1) {
            n += &format!("_stride{}", crossed(&self.stride));
        }
        if self.dilation.iter().any(|&s| s != 1) {
            n += &format!("_dil{}", crossed(&self.dilation));
        }
        n += &format!("_b{}_r{}", self.batch, rank_text(&self.rank));
        n
    }

    /// The layer configuration (bias off, as the anchor script's layers).
    pub fn config(&self) -> TtConvConfig {
        TtConvConfig::new(self.in_channels, self.out_channels, self.kernel.clone())
            .stride(self.stride.clone())
            .padding(self.padding.clone())
            .dilation(self.dilation.clone())
            .rank(self.rank.clone())
            .bias(false)
    }

    /// The input shape `(batch, in, D..)`.
    pub fn input_shape(&self) -> Vec<usize> {
        let mut s = vec![self.batch, self.in_channels];
        s.extend_from_slice(&self.spatial);
        s
    }

    /// The `--check` size: batch 1, channels / 8, spatial / 4 (at least 4 and the dilated
    /// kernel's extent); same kernel, geometry and rank spec.
    pub fn tiny(&self) -> Self {
        let spatial = self
            .spatial
            .iter()
            .zip(&self.kernel)
            .zip(&self.dilation)
            .map(|((&s, &k), &d)| (s / 4).max(4).max(d * (k - 1) + 1).min(s))
            .collect();
        CaseSpec {
            name: self.name.clone(),
            batch: 1,
            in_channels: (self.in_channels / 8).max(1),
            out_channels: (self.out_channels / 8).max(1),
            spatial,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_case_spec() {
        let c = CaseSpec::parse("b=8,c=64:128,s=56x56,k=3x3,stride=2,pad=1,dil=1,rank=16").unwrap();
        assert_eq!(c.batch, 8);
        assert_eq!((c.in_channels, c.out_channels), (64, 128));
        assert_eq!(c.spatial, vec![56, 56]);
        assert_eq!(c.kernel, vec![3, 3]);
        assert_eq!(c.stride, vec![2, 2]);
        assert_eq!(c.padding, Padding::Each(vec![1, 1]));
        assert_eq!(c.rank, RankSpec::Uniform(16));
        assert_eq!(c.name, "2d_c64to128_s56x56_k3x3_stride2x2_b8_r16");
        let c = CaseSpec::parse("c=32,s=8x28x28,k=3,pad=same,rank=1-4-4-4-4-1,name=v").unwrap();
        assert_eq!(c.kernel, vec![3, 3, 3]);
        assert_eq!(c.padding, Padding::Same);
        assert_eq!(c.rank, RankSpec::Explicit(vec![1, 4, 4, 4, 4, 1]));
        assert_eq!((c.batch, c.out_channels, c.name.as_str()), (1, 32, "v"));
        assert_eq!(parse_rank("0.1").unwrap(), RankSpec::Fraction(0.1));
        assert_eq!(parse_rank("same").unwrap(), RankSpec::Same);
        for bad in [
            "c=4,s=8,k=3,rank=x",
            "c=4,s=8",
            "c=4,s=8x8,k=3x3x3",
            "c=4,s=8,k=3,foo=1",
            "c=4,s=8,k=3,pad=same,stride=2",
            "c=4,s=2,k=5",
            "c=4,s=8,k=3,b=0.5",
            "c=4,s=8,k=3,b=0",
            "c=4,c=8,s=8,k=3",
            "c=4,s=8,k=3,rank=-0.5",
            "c=4;s=8",
        ] {
            assert!(CaseSpec::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn errors_say_what_was_expected_and_given() {
        let e = CaseSpec::parse("c=4,s=8x8,k=3x3x3").unwrap_err();
        assert!(e.contains("3 values") && e.contains("2 modes"), "{e}");
        let e = CaseSpec::parse("c=4,s=8,k=3,rank=x").unwrap_err();
        assert!(e.contains("rank=x") && e.contains("expected"), "{e}");
        let e = CaseSpec::parse("c=4,s=8").unwrap_err();
        assert!(e.contains("`k=` is required"), "{e}");
    }

    #[test]
    fn text_forms_read_back() {
        for r in ["same", "0.1", "16", "1-16-16-16-1"] {
            assert_eq!(rank_text(&parse_rank(r).unwrap()), r);
        }
        assert_eq!(
            padding_text(&Padding::Asymmetric(vec![(0, 1), (1, 0)])),
            "0:1x1:0"
        );
        assert_eq!(padding_text(&Padding::Each(vec![1, 2])), "1x2");
        let c = CaseSpec::parse("c=4,s=8x8,k=3,pad=1x2").unwrap();
        assert_eq!(
            CaseSpec::parse(&format!("c=4,s=8x8,k=3,pad={}", padding_text(&c.padding))),
            Ok(c)
        );
    }

    #[test]
    fn the_tiny_size_keeps_the_geometry_valid() {
        let c =
            CaseSpec::parse("b=8,c=64:128,s=56x9,k=3x5,stride=2,pad=1,dil=1x2,rank=16").unwrap();
        let t = c.tiny();
        assert_eq!((t.batch, t.in_channels, t.out_channels), (1, 8, 16));
        assert_eq!(t.spatial, vec![14, 9]);
        assert_eq!(
            (&t.kernel, &t.stride, &t.dilation),
            (&c.kernel, &c.stride, &c.dilation)
        );
        let g = t.config().validate().unwrap();
        assert!(ttconv::output_spatial(&t.spatial, &t.kernel, &g).is_ok());
    }
}
