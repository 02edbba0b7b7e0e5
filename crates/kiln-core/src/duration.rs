//! The clock as kiln records it (`now_ms`) and durations as people read them in messages: `250 ms`, `1.5 s`, `2 min 5 s`, `1 h 10 min`
//! (Rust's `{:?}` gives `1.500000123s`).

use std::time::Duration;

/// Unix time in milliseconds: the unit of every timestamp kiln stores and sends.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `d` rounded to what a reader cares about at its scale.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let secs = d.as_secs();
    match () {
        _ if ms < 1000 => format!("{ms} ms"),
        _ if secs < 10 => format!("{:.1}", d.as_secs_f64()).replace(".0", "") + " s",
        _ if secs < 60 => format!("{secs} s"),
        _ if secs < 3600 => match secs % 60 {
            0 => format!("{} min", secs / 60),
            s => format!("{} min {s} s", secs / 60),
        },
        _ => match (secs % 3600) / 60 {
            0 => format!("{} h", secs / 3600),
            m => format!("{} h {m} min", secs / 3600),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::human_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        let cases = [
            (Duration::from_micros(250_400), "250 ms"),
            (Duration::from_millis(1_500), "1.5 s"),
            (Duration::from_millis(2_001), "2 s"),
            (Duration::from_secs(30), "30 s"),
            (Duration::from_secs(60), "1 min"),
            (Duration::from_secs(125), "2 min 5 s"),
            (Duration::from_secs(3600), "1 h"),
            (Duration::from_secs(4200), "1 h 10 min"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(d), want);
        }
    }
}
