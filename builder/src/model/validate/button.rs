//! `[button]`: the shutdown button's pin, pull and debounce.

use super::{p, Validator};
use crate::model::Button;

impl Validator<'_> {
    pub(super) fn button(&mut self) -> Option<Button> {
        let raw = &self.raw.button;
        if !raw.enabled {
            return None;
        }
        let gpio = u8::try_from(raw.gpio).ok().filter(|g| *g <= 27);
        if gpio.is_none() {
            self.error(
                p(&["button", "gpio"]),
                format!("GPIO {} is not on the header", raw.gpio),
                "use a BCM GPIO number 0-27; 3 (header pin 5) also wakes a halted Pi 4",
            );
        }
        if !["up", "down", "off"].contains(&raw.pull.as_str()) {
            self.error(
                p(&["button", "pull"]),
                format!("unknown pull `{}`", raw.pull),
                "use `up`, `down` or `off`",
            );
        }
        if raw.debounce_ms > 10_000 {
            self.error(
                p(&["button", "debounce_ms"]),
                format!("debounce of {} ms is too long", raw.debounce_ms),
                "use a few tens to hundreds of milliseconds (default 100)",
            );
        }
        Some(Button {
            gpio: gpio.unwrap_or(3),
            active_low: raw.active_low,
            pull: raw.pull.clone(),
            debounce_ms: raw.debounce_ms,
        })
    }
}
