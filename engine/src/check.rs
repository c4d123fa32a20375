//! Range checks for the numbers of recipes and configurations. Each returns an error that
//! names the field and the value, e.g. "`lr` = NaN: must be a finite number ≥ 0".

/// A failed check: the message names the field.
pub type Checked = Result<(), String>;

fn fail(field: &str, x: f64, want: &str) -> Checked {
    Err(format!("`{field}` = {x}: must be {want}"))
}

/// `x` is finite.
pub fn finite(field: &str, x: f64) -> Checked {
    if x.is_finite() {
        Ok(())
    } else {
        fail(field, x, "a finite number")
    }
}

/// `x` is finite and ≥ 0.
pub fn non_negative(field: &str, x: f64) -> Checked {
    if x.is_finite() && x >= 0.0 {
        Ok(())
    } else {
        fail(field, x, "a finite number ≥ 0")
    }
}

/// `x` is finite and > 0.
pub fn positive(field: &str, x: f64) -> Checked {
    if x.is_finite() && x > 0.0 {
        Ok(())
    } else {
        fail(field, x, "a finite number > 0")
    }
}

/// `lo ≤ x < hi`.
pub fn half_open(field: &str, x: f64, lo: f64, hi: f64) -> Checked {
    if x >= lo && x < hi {
        Ok(())
    } else {
        fail(field, x, &format!("in [{lo}, {hi})"))
    }
}

/// `lo < x ≤ hi`.
pub fn open_closed(field: &str, x: f64, lo: f64, hi: f64) -> Checked {
    if x > lo && x <= hi {
        Ok(())
    } else {
        fail(field, x, &format!("in ({lo}, {hi}]"))
    }
}

/// `lo ≤ x ≤ hi`.
pub fn closed(field: &str, x: f64, lo: f64, hi: f64) -> Checked {
    if x >= lo && x <= hi {
        Ok(())
    } else {
        fail(field, x, &format!("in [{lo}, {hi}]"))
    }
}

/// Prefixes a section to a check's error: `[optim] `.
pub fn within(section: &str, r: Checked) -> Checked {
    r.map_err(|e| format!("{section} {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_field_and_reject_non_finite_values() {
        assert!(finite("x", 1.0).is_ok());
        let e = non_negative("lr", f64::NAN).unwrap_err();
        assert_eq!(e, "`lr` = NaN: must be a finite number ≥ 0");
        assert!(non_negative("lr", f64::INFINITY).is_err());
        assert!(non_negative("lr", -1e-9).is_err());
        assert!(positive("eps", 0.0).is_err());
        assert!(half_open("beta1", 1.0, 0.0, 1.0).is_err());
        assert!(half_open("beta1", f64::NAN, 0.0, 1.0).is_err());
        assert!(open_closed("top_p", 0.0, 0.0, 1.0).is_err());
        assert!(open_closed("top_p", 1.0, 0.0, 1.0).is_ok());
        assert!(closed("gamma", 1.0, 0.0, 1.0).is_ok());
        assert_eq!(
            within("[optim]", positive("eps", -1.0)).unwrap_err(),
            "[optim] `eps` = -1: must be a finite number > 0"
        );
    }
}
