//! Money on paper: integer minor units turned into a decimal string with the
//! currency's ISO 4217 exponent. Never floats.

use kiosk_schemas::Currency;

/// Exponent used when the code is not in ISO 4217 (or has no minor unit
/// there): most currencies have cents.
const FALLBACK_EXPONENT: u16 = 2;

/// Formats `minor` units of `currency` as a decimal number without the
/// currency code: `1250` EUR → `"12.50"`, `1250` JPY → `"1250"`, `1250`
/// KWD → `"1.250"`, `-50` EUR → `"-0.50"`.
///
/// The number of decimals is the currency's ISO 4217 exponent (from the
/// `iso_currency` crate); a code it does not know, or one without a minor
/// unit (`XAU`), is formatted with 2 decimals. The decimal separator is
/// always `.`, with no thousands separator.
pub fn format_amount(minor: i64, currency: &Currency) -> String {
    let exponent = iso_currency::Currency::from_code(currency.as_str())
        .and_then(iso_currency::Currency::exponent)
        .unwrap_or(FALLBACK_EXPONENT);
    format_minor(minor, u32::from(exponent))
}

fn format_minor(minor: i64, exponent: u32) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    // unsigned_abs: i64::MIN has no positive i64 counterpart.
    let abs = minor.unsigned_abs();
    match 10u64.checked_pow(exponent) {
        Some(unit) if exponent > 0 => {
            let width = exponent as usize;
            format!("{sign}{}.{:0width$}", abs / unit, abs % unit)
        }
        _ => format!("{sign}{abs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(minor: i64, code: &str) -> String {
        format_amount(minor, &Currency::new(code).unwrap())
    }

    #[test]
    fn uses_the_currency_exponent() {
        assert_eq!(fmt(1250, "EUR"), "12.50");
        assert_eq!(fmt(5, "EUR"), "0.05");
        assert_eq!(fmt(0, "EUR"), "0.00");
        assert_eq!(fmt(1250, "JPY"), "1250");
        assert_eq!(fmt(1250, "KWD"), "1.250");
    }

    #[test]
    fn negative_amounts_get_a_leading_minus() {
        assert_eq!(fmt(-50, "EUR"), "-0.50");
        assert_eq!(fmt(-1250, "EUR"), "-12.50");
        assert_eq!(fmt(-7, "JPY"), "-7");
        assert_eq!(fmt(i64::MIN, "EUR"), "-92233720368547758.08");
    }

    #[test]
    fn unknown_currency_falls_back_to_two_decimals() {
        assert_eq!(fmt(1250, "ZZZ"), "12.50");
    }
}
