//! Element decoders: raw (possibly unaligned, possibly byte-swapped) bytes to values.

/// Decodes one floating-point element from exactly `SIZE` bytes.
pub trait FloatLoad: Send + Sync + 'static {
    /// Element width in bytes.
    const SIZE: usize;
    /// The value, widened to f64 (exactly).
    fn dec(b: &[u8]) -> f64;
    /// Whether the type is narrow enough for [`FloatLoad::key`] and [`FloatLoad::unit`]:
    /// sums of its values can then be proved exact in f64.
    const NARROW: bool = false;
    /// The bits of `|x|` minus one, wrapping (zero becomes the largest key): the smallest key
    /// over some values names their smallest nonzero magnitude.
    #[inline(always)]
    fn key(_b: &[u8]) -> u32 {
        0
    }
    /// The unit in the last place of the smallest nonzero magnitude named by `key`, which
    /// every value is a whole multiple of (infinity when all were zero).
    fn unit(_key: u32) -> f64 {
        f64::INFINITY
    }
    /// A unit every value of the type is a whole multiple of, when there is one (float16:
    /// 2^-24): sums are then proved exact without looking at the values' magnitudes.
    const UNIT: Option<f64> = None;
}

/// Decodes one integer or bool element from exactly `SIZE` bytes.
pub trait IntLoad: Send + Sync + 'static {
    /// Element width in bytes.
    const SIZE: usize;
    /// The true value is `dec(b) as i128 + OFFSET` (u64 is stored shifted into i64 range,
    /// which keeps order, so min/max/sums stay in i64 lanes).
    const OFFSET: i128;
    /// The (shifted) value.
    fn dec(b: &[u8]) -> i64;
    /// The same value (shift included) as f64, exactly, for types of at most 4 bytes;
    /// written so it vectorises (through i32 conversions).
    #[inline(always)]
    fn dec_f64(b: &[u8]) -> f64 {
        Self::dec(b) as f64
    }
}

macro_rules! float_load {
    ($name:ident, $size:expr, $bits:ty, $from:ident, |$v:ident| $conv:expr) => {
        /// Float decoder.
        pub struct $name;
        impl FloatLoad for $name {
            const SIZE: usize = $size;
            #[inline(always)]
            fn dec(b: &[u8]) -> f64 {
                let $v = <$bits>::$from(b.try_into().unwrap());
                $conv
            }
        }
    };
}

float_load!(F64Le, 8, u64, from_le_bytes, |v| f64::from_bits(v));
float_load!(F64Be, 8, u64, from_be_bytes, |v| f64::from_bits(v));

/// Float decoder with the units of narrow types: `$mant` fraction bits and exponent bias
/// `$bias`, so a value with exponent field E is a multiple of 2^(max(E, 1) - bias - mant).
macro_rules! narrow_load {
    ($name:ident, $size:expr, $bits:ty, $from:ident, $abs:expr, $mant:expr, $bias:expr, |$v:ident| $conv:expr) => {
        narrow_load!($name, $size, $bits, $from, $abs, $mant, $bias, None, |$v| {
            $conv
        });
    };
    ($name:ident, $size:expr, $bits:ty, $from:ident, $abs:expr, $mant:expr, $bias:expr, $unit:expr, |$v:ident| $conv:expr) => {
        /// Float decoder.
        pub struct $name;
        impl FloatLoad for $name {
            const SIZE: usize = $size;
            const NARROW: bool = true;
            const UNIT: Option<f64> = $unit;
            #[inline(always)]
            fn dec(b: &[u8]) -> f64 {
                let $v = <$bits>::$from(b.try_into().unwrap());
                $conv
            }
            #[inline(always)]
            fn key(b: &[u8]) -> u32 {
                ((<$bits>::$from(b.try_into().unwrap()) & $abs) as u32).wrapping_sub(1)
            }
            fn unit(key: u32) -> f64 {
                if key == u32::MAX {
                    return f64::INFINITY;
                }
                let e = ((key + 1) >> $mant) as i32;
                2f64.powi(e.max(1) - $bias - $mant)
            }
        }
    };
}

narrow_load!(
    F32Le,
    4,
    u32,
    from_le_bytes,
    0x7fff_ffff,
    23,
    127,
    |v| f32::from_bits(v) as f64
);
narrow_load!(
    F32Be,
    4,
    u32,
    from_be_bytes,
    0x7fff_ffff,
    23,
    127,
    |v| f32::from_bits(v) as f64
);
narrow_load!(
    F16Le,
    2,
    u16,
    from_le_bytes,
    0x7fff,
    10,
    15,
    Some(F16_UNIT),
    |v| f16_to_f64(v)
);
narrow_load!(
    F16Be,
    2,
    u16,
    from_be_bytes,
    0x7fff,
    10,
    15,
    Some(F16_UNIT),
    |v| f16_to_f64(v)
);

/// Every finite float16 is a whole multiple of its smallest subnormal, 2^-24, and below 2^16:
/// a sum of up to 2^13 of them is exact in f64.
pub const F16_UNIT: f64 = 1.0 / 16777216.0;

/// IEEE half to f64, exactly, without branches (so it vectorises): the exponent and mantissa
/// bits moved into an f32 and scaled by 2^112 handle normal and subnormal values; infinities
/// and NaNs get the f32 all-ones exponent.
#[inline(always)]
pub fn f16_to_f64(h: u16) -> f64 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff;
    let scaled = f32::from_bits(em << 13) * f32::from_bits(0x7780_0000); // 2^112
    let special = f32::from_bits((em << 13) | 0x7f80_0000);
    let v = if em >= 0x7c00 { special } else { scaled };
    f32::from_bits(v.to_bits() | sign) as f64
}

#[cfg(test)]
mod tests {
    use super::FloatLoad;

    #[test]
    fn units_divide_every_value() {
        for x in [
            1.0f32,
            3.0,
            0.1,
            1e-30,
            1e30,
            f32::MIN_POSITIVE,
            1e-45,
            65504.0,
            0.0,
        ] {
            let k = super::F32Le::key(&x.to_le_bytes());
            let u = super::F32Le::unit(k);
            if x == 0.0 {
                assert_eq!(u, f64::INFINITY);
                continue;
            }
            let m = x as f64 / u;
            assert!(
                m == m.trunc() && m < (1u64 << 24) as f64 && m >= 1.0,
                "{x}: {m}"
            );
        }
        for bits in 1..0x7c00u16 {
            let u = super::F16Le::unit(super::F16Le::key(&bits.to_le_bytes()));
            let m = super::f16_to_f64(bits) / u;
            assert!(
                m == m.trunc() && (1.0..2048.0).contains(&m),
                "{bits:#x}: {m}"
            );
        }
    }

    #[test]
    fn f16_conversion_matches_half_for_every_value() {
        for bits in 0..=u16::MAX {
            let want = half::f16::from_bits(bits).to_f64();
            let got = super::f16_to_f64(bits);
            assert!(
                want.to_bits() == got.to_bits() || (want.is_nan() && got.is_nan()),
                "{bits:#06x}: {got} vs {want}"
            );
        }
    }
}

macro_rules! int_load {
    ($name:ident, $size:expr, $t:ty, $from:ident, $off:expr, |$v:ident| $conv:expr) => {
        int_load!($name, $size, $t, $from, $off, |$v| $conv, |x| x as f64);
    };
    ($name:ident, $size:expr, $t:ty, $from:ident, $off:expr, |$v:ident| $conv:expr, |$x:ident| $f:expr) => {
        /// Integer decoder.
        pub struct $name;
        impl IntLoad for $name {
            const SIZE: usize = $size;
            const OFFSET: i128 = $off;
            #[inline(always)]
            fn dec(b: &[u8]) -> i64 {
                let $v = <$t>::$from(b.try_into().unwrap());
                $conv
            }
            #[inline(always)]
            fn dec_f64(b: &[u8]) -> f64 {
                let $x = <$t>::$from(b.try_into().unwrap());
                $f
            }
        }
    };
}

// Conversions to f64 go through i32, which AVX2 converts natively (i64 and u32 it does not).
int_load!(
    BoolL,
    1,
    u8,
    from_le_bytes,
    0,
    |v| (v != 0) as i64,
    |x| (x != 0) as i32 as f64
);
int_load!(I8L, 1, i8, from_le_bytes, 0, |v| v as i64, |x| x as i32
    as f64);
int_load!(U8L, 1, u8, from_le_bytes, 0, |v| v as i64, |x| x as i32
    as f64);
int_load!(I16Le, 2, i16, from_le_bytes, 0, |v| v as i64, |x| x as i32
    as f64);
int_load!(I16Be, 2, i16, from_be_bytes, 0, |v| v as i64, |x| x as i32
    as f64);
int_load!(U16Le, 2, u16, from_le_bytes, 0, |v| v as i64, |x| x as i32
    as f64);
int_load!(U16Be, 2, u16, from_be_bytes, 0, |v| v as i64, |x| x as i32
    as f64);
int_load!(I32Le, 4, i32, from_le_bytes, 0, |v| v as i64, |x| x as f64);
int_load!(I32Be, 4, i32, from_be_bytes, 0, |v| v as i64, |x| x as f64);
int_load!(
    U32Le,
    4,
    u32,
    from_le_bytes,
    0,
    |v| v as i64,
    |x| ((x ^ 0x8000_0000) as i32) as f64 + 2147483648.0
);
int_load!(
    U32Be,
    4,
    u32,
    from_be_bytes,
    0,
    |v| v as i64,
    |x| ((x ^ 0x8000_0000) as i32) as f64 + 2147483648.0
);
int_load!(I64Le, 8, i64, from_le_bytes, 0, |v| v);
int_load!(I64Be, 8, i64, from_be_bytes, 0, |v| v);
int_load!(
    U64Le,
    8,
    u64,
    from_le_bytes,
    1i128 << 63,
    |v| (v ^ (1u64 << 63)) as i64
);
int_load!(
    U64Be,
    8,
    u64,
    from_be_bytes,
    1i128 << 63,
    |v| (v ^ (1u64 << 63)) as i64
);
