//! The registry of statistics: for each, its name, which accumulator families it needs, and
//! how it is finished from a column's accumulator. Everything else — parsing `--stats`,
//! [`crate::Summary`], every output format — goes through this table, so a new statistic
//! is a row here, its accumulator fields (`moments.rs`) and its kernel lanes.

use crate::kernel::Need;
use crate::moments::Acc;
use crate::Stat;

/// How a run's results are finished: what does not live in the accumulators.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Finish {
    /// Integer (or bool) dtype: sums, minima and maxima are exact integers.
    pub int: bool,
    /// Delta degrees of freedom.
    pub ddof: u64,
    /// `--nan propagate`: a column holding a NaN reports NaN.
    pub propagate: bool,
}

/// One finished value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Out {
    /// A float (NaN where undefined).
    F(f64),
    /// An exact integer (`None` where undefined).
    I(Option<i128>),
}

/// One statistic of the registry.
pub(crate) struct Def {
    /// Which one.
    pub stat: Stat,
    /// Its name in `--stats`, JSON keys, CSV headers and `.npz` members.
    pub name: &'static str,
    /// Its number in saved states (`docs/state-format.md`): fixed forever, whatever the
    /// order of the registry, so a new statistic never renumbers old files.
    pub id: u16,
    /// The accumulator families it needs from the kernel.
    pub needs: Need,
    /// Its value for one column.
    pub finish: fn(&Acc, &Finish) -> Out,
}

const NONE: Need = Need {
    moments: false,
    minmax: false,
};
const MOMENTS: Need = Need {
    moments: true,
    minmax: false,
};
const MINMAX: Need = Need {
    moments: false,
    minmax: true,
};

/// Float results under `--nan propagate` are NaN for a column holding a NaN.
fn float(a: &Acc, f: &Finish, v: impl FnOnce() -> f64) -> Out {
    Out::F(if f.propagate && a.nan > 0 {
        f64::NAN
    } else {
        v()
    })
}

fn var(a: &Acc, f: &Finish) -> f64 {
    if a.n <= f.ddof {
        return f64::NAN;
    }
    let v = a.m2 / (a.n - f.ddof) as f64;
    // Finite data whose sums overflowed (values near f64::MAX): infinite, as numpy gives,
    // rather than the NaN of inf - inf.
    if v.is_nan() && a.min.is_finite() && a.max.is_finite() {
        f64::INFINITY
    } else {
        v
    }
}

fn extreme(a: &Acc, f: &Finish, min: bool) -> Out {
    if f.int {
        Out::I((a.n > 0).then_some(if min { a.imin } else { a.imax }))
    } else {
        float(a, f, || match (a.n, min) {
            (0, _) => f64::NAN,
            (_, true) => a.min,
            (_, false) => a.max,
        })
    }
}

/// Every statistic, in output order.
pub(crate) const REGISTRY: [Def; 8] = [
    Def {
        stat: Stat::Count,
        name: "count",
        id: 1,
        needs: NONE,
        finish: |a, _| Out::I(Some(a.n as i128)),
    },
    Def {
        stat: Stat::NanCount,
        name: "nan_count",
        id: 2,
        needs: NONE,
        finish: |a, _| Out::I(Some(a.nan as i128)),
    },
    Def {
        stat: Stat::Sum,
        name: "sum",
        id: 3,
        needs: MOMENTS,
        finish: |a, f| {
            if f.int {
                Out::I(Some(a.isum))
            } else {
                float(a, f, || if a.n == 0 { 0.0 } else { a.sum() })
            }
        },
    },
    Def {
        stat: Stat::Mean,
        name: "mean",
        id: 4,
        needs: MOMENTS,
        finish: |a, f| {
            float(a, f, || match a.n {
                0 => f64::NAN,
                n if f.int => a.isum as f64 / n as f64,
                n => a.sum() / n as f64,
            })
        },
    },
    Def {
        stat: Stat::Var,
        name: "var",
        id: 5,
        needs: MOMENTS,
        finish: |a, f| float(a, f, || var(a, f)),
    },
    Def {
        stat: Stat::Std,
        name: "std",
        id: 6,
        needs: MOMENTS,
        finish: |a, f| float(a, f, || var(a, f).sqrt()),
    },
    Def {
        stat: Stat::Min,
        name: "min",
        id: 7,
        needs: MINMAX,
        finish: |a, f| extreme(a, f, true),
    },
    Def {
        stat: Stat::Max,
        name: "max",
        id: 8,
        needs: MINMAX,
        finish: |a, f| extreme(a, f, false),
    },
];

/// The registry's row for `stat`.
pub(crate) fn def(stat: Stat) -> &'static Def {
    REGISTRY
        .iter()
        .find(|d| d.stat == stat)
        .expect("every Stat is registered")
}

/// The statistic saved states number `id`.
pub(crate) fn by_id(id: u16) -> Option<Stat> {
    REGISTRY.iter().find(|d| d.id == id).map(|d| d.stat)
}

/// The accumulator families `stats` need together.
pub(crate) fn needs(stats: &[Stat]) -> Need {
    stats.iter().fold(NONE, |n, &s| {
        let d = def(s).needs;
        Need {
            moments: n.moments || d.moments,
            minmax: n.minmax || d.minmax,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_lists_every_statistic_once_in_output_order() {
        let listed: Vec<Stat> = REGISTRY.iter().map(|d| d.stat).collect();
        assert_eq!(listed, Stat::ALL.to_vec());
        for d in &REGISTRY {
            assert_eq!(Stat::from_name(d.name), Some(d.stat));
            assert_eq!(by_id(d.id), Some(d.stat), "ids are unique");
        }
    }
}
