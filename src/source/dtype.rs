//! Element types and byte order, in one place.

use std::fmt;

/// The numeric family of an element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `bool`, one byte holding 0 or 1.
    Bool,
    /// Signed integers.
    Int,
    /// Unsigned integers.
    UInt,
    /// IEEE floats (half, single, double).
    Float,
}

/// Byte order of multi-byte elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// Least significant byte first.
    Little,
    /// Most significant byte first.
    Big,
}

impl ByteOrder {
    /// The order of the machine running this code.
    pub const NATIVE: ByteOrder = if cfg!(target_endian = "little") {
        ByteOrder::Little
    } else {
        ByteOrder::Big
    };
}

/// A numeric element type: family, width in bytes and byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DType {
    /// Numeric family.
    pub kind: Kind,
    /// Width in bytes (1, 2, 4 or 8).
    pub size: usize,
    /// Byte order (irrelevant, and `NATIVE`, for one-byte types).
    pub order: ByteOrder,
}

impl DType {
    /// Builds a dtype, checking that the width exists for the family.
    pub fn new(kind: Kind, size: usize, order: ByteOrder) -> Option<DType> {
        let ok = match kind {
            Kind::Bool => size == 1,
            Kind::Int | Kind::UInt => matches!(size, 1 | 2 | 4 | 8),
            Kind::Float => matches!(size, 2 | 4 | 8),
        };
        let order = if size == 1 { ByteOrder::NATIVE } else { order };
        ok.then_some(DType { kind, size, order })
    }

    /// numpy's name for the type (`float64`, `int32`, `uint8`, `bool`, ...).
    pub fn name(&self) -> &'static str {
        match (self.kind, self.size) {
            (Kind::Bool, _) => "bool",
            (Kind::Int, 1) => "int8",
            (Kind::Int, 2) => "int16",
            (Kind::Int, 4) => "int32",
            (Kind::Int, _) => "int64",
            (Kind::UInt, 1) => "uint8",
            (Kind::UInt, 2) => "uint16",
            (Kind::UInt, 4) => "uint32",
            (Kind::UInt, _) => "uint64",
            (Kind::Float, 2) => "float16",
            (Kind::Float, 4) => "float32",
            (Kind::Float, _) => "float64",
        }
    }

    /// True for integer and bool types, whose sums, minima and maxima are exact integers.
    pub fn is_integer(&self) -> bool {
        !matches!(self.kind, Kind::Float)
    }

    /// numpy's type string for this dtype, e.g. `<f8`, `>i4`, `|u1`, `|b1`.
    pub fn descr(&self) -> String {
        let o = if self.size == 1 {
            '|'
        } else if self.order == ByteOrder::Little {
            '<'
        } else {
            '>'
        };
        let k = match self.kind {
            Kind::Bool => 'b',
            Kind::Int => 'i',
            Kind::UInt => 'u',
            Kind::Float => 'f',
        };
        format!("{o}{k}{}", self.size)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.size > 1 && self.order != ByteOrder::NATIVE {
            let o = match self.order {
                ByteOrder::Little => "little-endian",
                ByteOrder::Big => "big-endian",
            };
            write!(f, "{} ({o})", self.name())
        } else {
            f.write_str(self.name())
        }
    }
}
