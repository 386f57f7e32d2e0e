//! Wallet addresses as they appear on the wire.

use alloy_primitives::Address;
use std::fmt;
use std::str::FromStr;

/// An EVM account address, parsed from `0x` + 40 hex digits in any letter case.
///
/// The EIP-55 checksum of mixed-case input is not enforced: the signed message always
/// carries the lowercase form, and a wrong address fails signature recovery anyway.
/// Displays lowercase (the form used in messages, storage and responses).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WalletAddress(Address);

/// Why a string is not a wallet address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("wallet address must be 0x followed by 40 hexadecimal digits")]
pub struct InvalidAddress;

impl WalletAddress {
    /// Wraps a raw address.
    pub fn new(address: Address) -> Self {
        WalletAddress(address)
    }

    /// The underlying 20 bytes.
    pub fn address(&self) -> Address {
        self.0
    }

    /// Lowercase `0x…` form.
    pub fn to_lowercase_hex(&self) -> String {
        format!("{:#x}", self.0)
    }

    /// EIP-55 checksummed form.
    pub fn to_checksum(&self) -> String {
        self.0.to_checksum(None)
    }
}

impl FromStr for WalletAddress {
    type Err = InvalidAddress;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .ok_or(InvalidAddress)?;
        if hex_part.len() != 40 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidAddress);
        }
        let mut bytes = [0u8; 20];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| InvalidAddress)?;
        Ok(WalletAddress(Address::from(bytes)))
    }
}

impl fmt::Display for WalletAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::Debug for WalletAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletAddress({:#x})", self.0)
    }
}

impl serde::Serialize for WalletAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for WalletAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_case_and_displays_lowercase() {
        let a: WalletAddress = "0xAbC0000000000000000000000000000000000dEf"
            .parse()
            .unwrap();
        assert_eq!(a.to_string(), "0xabc0000000000000000000000000000000000def");
        let b: WalletAddress = "0XABC0000000000000000000000000000000000DEF"
            .parse()
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "0x",
            "abc0000000000000000000000000000000000def",
            "0xabc0000000000000000000000000000000000de",
            "0xabc0000000000000000000000000000000000defa",
            "0xzbc0000000000000000000000000000000000def",
            " 0xabc0000000000000000000000000000000000def",
            "0x+bc0000000000000000000000000000000000def",
        ] {
            assert!(bad.parse::<WalletAddress>().is_err(), "accepted {bad:?}");
        }
    }
}
