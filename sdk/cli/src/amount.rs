//! Amounts as people write them (`1,000,000.00 CNY`) and as the chain stores
//! them (minor units, `u128`), and annual rates (`3.5%`) as basis points.
//!
//! A currency's number of decimals comes from [`decimals`]; input with more
//! decimals than that is refused rather than rounded, so what is signed is
//! exactly what was typed. Parsing never panics: every bad input is an
//! [`AmountError`] that says what is wrong.

/// Decimals of the currencies the CLI knows; any other currency has 2.
pub const CURRENCY_DECIMALS: &[(&str, u8)] = &[
    ("CNY", 2),
    ("USD", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("JPY", 0),
    ("KRW", 0),
];

/// Decimals of a currency not in [`CURRENCY_DECIMALS`].
pub const DEFAULT_DECIMALS: u8 = 2;

/// How many decimals `currency`'s minor unit has (`CNY`: 2, `JPY`: 0, unknown: 2).
pub fn decimals(currency: &str) -> u8 {
    CURRENCY_DECIMALS
        .iter()
        .find(|(c, _)| *c == currency)
        .map_or(DEFAULT_DECIMALS, |(_, d)| *d)
}

/// Why an amount or a rate does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("no amount given")]
    Empty,
    #[error("`{0}`: amounts cannot be negative")]
    Negative(String),
    #[error("`{input}` has {given} decimal(s), but {currency} has {allowed}")]
    TooManyDecimals {
        input: String,
        currency: String,
        given: usize,
        allowed: u8,
    },
    #[error("`{0}` is too large")]
    Overflow(String),
    #[error("`{input}` is not an amount: {why}")]
    Malformed { input: String, why: &'static str },
    #[error("`{input}` is in {given}, but the currency is {expected}")]
    CurrencyMismatch {
        input: String,
        given: String,
        expected: String,
    },
    #[error("`{0}`: no currency; write it after the amount (`1,000.00 CNY`) or give --currency")]
    NoCurrency(String),
    #[error("`{0}` is not a currency code: 3 to 12 upper-case letters or digits, e.g. CNY")]
    BadCurrency(String),
    #[error("`{input}` is not an annual rate: {why}")]
    BadRate { input: String, why: &'static str },
}

/// An amount in a currency: `minor` units of `currency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    pub minor: u128,
    pub currency: String,
}

impl Money {
    /// `1,000,000.00 CNY`.
    pub fn display(&self) -> String {
        format_money(self.minor, &self.currency)
    }
}

/// A currency code as the contract accepts it (upper-cased first).
pub fn parse_currency(input: &str) -> Result<String, AmountError> {
    let code = input.trim().to_ascii_uppercase();
    let ok = (3..=12).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if ok {
        Ok(code)
    } else {
        Err(AmountError::BadCurrency(input.trim().to_owned()))
    }
}

/// Parses `1000000`, `1000000.5`, `1,000,000.00` or any of them followed by
/// a currency code (`1,000,000.00 CNY`). The currency is the one written
/// after the amount or `currency`; when both are there they must agree.
pub fn parse_money(input: &str, currency: Option<&str>) -> Result<Money, AmountError> {
    let trimmed = input.trim();
    let mut words = trimmed.split_whitespace();
    let number = words.next().ok_or(AmountError::Empty)?;
    let written = words.next().map(parse_currency).transpose()?;
    if words.next().is_some() {
        return Err(AmountError::Malformed {
            input: trimmed.to_owned(),
            why: "write a number, optionally followed by a currency code",
        });
    }
    let expected = currency.map(parse_currency).transpose()?;
    let currency = match (written, expected) {
        (Some(given), Some(expected)) if given != expected => {
            return Err(AmountError::CurrencyMismatch {
                input: trimmed.to_owned(),
                given,
                expected,
            });
        }
        (Some(c), _) | (None, Some(c)) => c,
        (None, None) => return Err(AmountError::NoCurrency(trimmed.to_owned())),
    };
    let minor = parse_minor(number, &currency)?;
    Ok(Money { minor, currency })
}

/// Parses a plain decimal number (`1,000,000.00`) into minor units of `currency`.
pub fn parse_minor(input: &str, currency: &str) -> Result<u128, AmountError> {
    let input = input.trim();
    let allowed = decimals(currency);
    let malformed = |why| AmountError::Malformed {
        input: input.to_owned(),
        why,
    };
    if input.is_empty() {
        return Err(AmountError::Empty);
    }
    if input.starts_with('-') {
        return Err(AmountError::Negative(input.to_owned()));
    }
    if input.starts_with('+') {
        return Err(malformed("write the number without a sign"));
    }
    let (int_part, frac_part) = match input.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (input, None),
    };
    if int_part.is_empty() {
        return Err(malformed("write a digit before the decimal point (0.50)"));
    }
    let digits = if int_part.contains(',') {
        let mut groups = int_part.split(',');
        let first = groups.next().unwrap_or_default();
        let grouped = (1..=3).contains(&first.len())
            && first.bytes().all(|b| b.is_ascii_digit())
            && groups.all(|g| g.len() == 3 && g.bytes().all(|b| b.is_ascii_digit()));
        if !grouped {
            return Err(malformed(
                "commas must separate groups of three digits (1,000,000.00)",
            ));
        }
        int_part.replace(',', "")
    } else {
        if !int_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed(
                "use digits, commas between thousands and a decimal point",
            ));
        }
        int_part.to_owned()
    };
    let frac = match frac_part {
        None => "",
        Some("") => return Err(malformed("write the decimals after the point, or no point")),
        Some(f) if !f.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(malformed(
                "only digits may follow the decimal point (1,000.50)",
            ));
        }
        Some(f) => f,
    };
    if frac.len() > usize::from(allowed) {
        return Err(AmountError::TooManyDecimals {
            input: input.to_owned(),
            currency: currency.to_owned(),
            given: frac.len(),
            allowed,
        });
    }
    let overflow = || AmountError::Overflow(input.to_owned());
    let scale = 10u128
        .checked_pow(u32::from(allowed))
        .ok_or_else(overflow)?;
    let whole = parse_digits(&digits).ok_or_else(overflow)?;
    let frac_scale = 10u128
        .checked_pow(u32::from(allowed) - frac.len() as u32)
        .ok_or_else(overflow)?;
    let frac_value = parse_digits(frac)
        .and_then(|f| f.checked_mul(frac_scale))
        .ok_or_else(overflow)?;
    whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(frac_value))
        .ok_or_else(overflow)
}

/// A string of ASCII digits as a `u128` (`Some(0)` for ""); `None` on overflow.
fn parse_digits(digits: &str) -> Option<u128> {
    digits.bytes().try_fold(0u128, |acc, b| {
        acc.checked_mul(10)?.checked_add(u128::from(b - b'0'))
    })
}

/// `minor` units with `decimals` decimals, thousands separated: `1,000,000.00`.
pub fn format_minor(minor: u128, decimals: u8) -> String {
    let scale = 10u128.checked_pow(u32::from(decimals));
    let (whole, frac) = match scale {
        Some(scale) => (minor / scale, Some(minor % scale)),
        // More decimals than a u128 can hold: every unit is a fraction.
        None => (0, Some(minor)),
    };
    let digits = whole.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 4);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if decimals > 0
        && let Some(frac) = frac
    {
        out.push('.');
        out.push_str(&format!("{frac:0width$}", width = usize::from(decimals)));
    }
    out
}

/// `1,000,000.00 CNY`.
pub fn format_money(minor: u128, currency: &str) -> String {
    format!("{} {currency}", format_minor(minor, decimals(currency)))
}

/// The decimal value without separators, for JSON (`1000000.00`).
pub fn plain_minor(minor: u128, currency: &str) -> String {
    format_minor(minor, decimals(currency)).replace(',', "")
}

/// An annual rate as basis points: `3.5%`, `3.5` (percent) or `350bps`.
/// At most two decimals of a percent (one basis point).
pub fn parse_rate(input: &str) -> Result<u32, AmountError> {
    let trimmed = input.trim();
    let bad = |why| AmountError::BadRate {
        input: trimmed.to_owned(),
        why,
    };
    if trimmed.starts_with('-') {
        return Err(bad("rates cannot be negative"));
    }
    if let Some(bps) = trimmed.strip_suffix("bps") {
        let bps = bps.trim();
        if bps.is_empty() || !bps.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("write whole basis points, e.g. 350bps"));
        }
        return bps.parse().map_err(|_| bad("too large"));
    }
    let percent = trimmed.strip_suffix('%').unwrap_or(trimmed).trim();
    // A percent with two decimals is a whole number of basis points: parse it
    // as an amount of a two-decimal unit.
    match parse_minor(percent, "PERCENT") {
        Ok(bps) => u32::try_from(bps).map_err(|_| bad("too large")),
        Err(AmountError::TooManyDecimals { .. }) => Err(bad(
            "at most two decimals of a percent (one basis point), e.g. 3.25%",
        )),
        Err(AmountError::Overflow(_)) => Err(bad("too large")),
        Err(_) => Err(bad(
            "write a percentage such as 3.5% or basis points such as 350bps",
        )),
    }
}

/// `350` → `3.50%`.
pub fn format_rate(bps: u32) -> String {
    format!("{}%", format_minor(u128::from(bps), 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cny(s: &str) -> Result<u128, AmountError> {
        parse_minor(s, "CNY")
    }

    #[test]
    fn plain_grouped_and_fractional_amounts_parse_to_minor_units() {
        assert_eq!(cny("1000000"), Ok(100_000_000));
        assert_eq!(cny("1000000.5"), Ok(100_000_050));
        assert_eq!(cny("1,000,000.00"), Ok(100_000_000));
        assert_eq!(cny("1,000,000"), Ok(100_000_000));
        assert_eq!(cny("0.01"), Ok(1));
        assert_eq!(cny("0"), Ok(0));
        assert_eq!(cny(" 12.3 "), Ok(1_230));
        assert_eq!(cny("999"), Ok(99_900));
        assert_eq!(parse_minor("1,000", "JPY"), Ok(1_000));
        assert_eq!(parse_minor("150000.75", "XYZ"), Ok(15_000_075));
    }

    #[test]
    fn more_decimals_than_the_currency_has_are_refused_not_rounded() {
        assert!(matches!(
            cny("1.234"),
            Err(AmountError::TooManyDecimals {
                given: 3,
                allowed: 2,
                ..
            })
        ));
        assert!(matches!(
            cny("1.000"),
            Err(AmountError::TooManyDecimals { .. })
        ));
        assert!(matches!(
            parse_minor("1.5", "JPY"),
            Err(AmountError::TooManyDecimals {
                given: 1,
                allowed: 0,
                ..
            })
        ));
    }

    #[test]
    fn negative_overflowing_and_garbage_amounts_are_refused() {
        assert!(matches!(cny("-5"), Err(AmountError::Negative(_))));
        assert!(matches!(cny("-0.01"), Err(AmountError::Negative(_))));
        // u128::MAX is 340,282,366,920,938,463,463,374,607,431,768,211,455.
        assert!(matches!(
            cny("340282366920938463463374607431768211455"),
            Err(AmountError::Overflow(_))
        ));
        assert!(matches!(
            cny("3402823669209384634633746074317682114.55"),
            Ok(u128::MAX)
        ));
        assert!(matches!(
            cny("3402823669209384634633746074317682114.56"),
            Err(AmountError::Overflow(_))
        ));
        assert!(matches!(
            cny("99999999999999999999999999999999999999999999"),
            Err(AmountError::Overflow(_))
        ));
        for garbage in [
            "",
            " ",
            "abc",
            "1e6",
            "1.2.3",
            "1,00",
            "1,0000",
            ",100",
            "100,",
            "1,000.",
            ".5",
            "+5",
            "1 000",
            "0x10",
            "½",
            "١٢٣",
            "1_000",
            "NaN",
            "1,000,00.00",
            "12,34,567",
        ] {
            assert!(cny(garbage).is_err(), "{garbage:?} parsed");
        }
    }

    #[test]
    fn a_currency_after_the_amount_is_read_and_must_agree_with_the_option() {
        let money = parse_money("1,000,000.00 CNY", None).unwrap();
        assert_eq!(
            money,
            Money {
                minor: 100_000_000,
                currency: "CNY".into()
            }
        );
        assert_eq!(parse_money("5 cny", Some("CNY")).unwrap().minor, 500);
        assert_eq!(parse_money("5", Some("usd")).unwrap().currency, "USD");
        assert!(matches!(
            parse_money("5 USD", Some("CNY")),
            Err(AmountError::CurrencyMismatch { .. })
        ));
        assert!(matches!(
            parse_money("5", None),
            Err(AmountError::NoCurrency(_))
        ));
        assert!(matches!(
            parse_money("5 C", None),
            Err(AmountError::BadCurrency(_))
        ));
        assert!(matches!(
            parse_money("5 CNY extra", None),
            Err(AmountError::Malformed { .. })
        ));
        assert!(matches!(
            parse_money("", Some("CNY")),
            Err(AmountError::Empty)
        ));
    }

    #[test]
    fn amounts_format_with_separators_and_the_currency_decimals() {
        assert_eq!(format_money(100_000_000, "CNY"), "1,000,000.00 CNY");
        assert_eq!(format_money(14_998_562, "CNY"), "149,985.62 CNY");
        assert_eq!(format_money(1, "USD"), "0.01 USD");
        assert_eq!(format_money(0, "EUR"), "0.00 EUR");
        assert_eq!(format_money(1_000, "JPY"), "1,000 JPY");
        assert_eq!(format_money(123, "JPY"), "123 JPY");
        assert_eq!(format_minor(100_000, 2), "1,000.00");
        assert_eq!(format_minor(99_999, 2), "999.99");
        assert_eq!(
            format_minor(u128::MAX, 2),
            "3,402,823,669,209,384,634,633,746,074,317,682,114.55"
        );
        assert_eq!(
            format_minor(5, 39),
            "0.000000000000000000000000000000000000005"
        );
        assert_eq!(plain_minor(100_000_000, "CNY"), "1000000.00");
    }

    #[test]
    fn formatting_then_parsing_gives_the_same_minor_units() {
        for minor in [0u128, 1, 99, 100, 101, 123_456_789, 100_000_000, u128::MAX] {
            for currency in ["CNY", "JPY"] {
                let shown = format_money(minor, currency);
                assert_eq!(parse_money(&shown, None).unwrap().minor, minor, "{shown}");
            }
        }
    }

    #[test]
    fn rates_parse_as_percent_or_basis_points() {
        assert_eq!(parse_rate("3.5%"), Ok(350));
        assert_eq!(parse_rate("3.5"), Ok(350));
        assert_eq!(parse_rate("3.25 %"), Ok(325));
        assert_eq!(parse_rate("350bps"), Ok(350));
        assert_eq!(parse_rate("0%"), Ok(0));
        assert_eq!(parse_rate("100%"), Ok(10_000));
        for bad in ["-1%", "3.125%", "abc", "bps", "1e3%", "99999999999%", "%"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(format_rate(350), "3.50%");
    }

    #[test]
    fn unknown_currencies_have_two_decimals() {
        assert_eq!(decimals("CNY"), 2);
        assert_eq!(decimals("JPY"), 0);
        assert_eq!(decimals("XAU1"), 2);
    }
}
