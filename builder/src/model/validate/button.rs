//! `[button]`: the shutdown button's pin, pull and hold time.

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
        if !(20..=10_000).contains(&raw.hold_ms) {
            self.error(
                p(&["button", "hold_ms"]),
                format!("a hold of {} ms is out of range", raw.hold_ms),
                "use 20 to 10000 milliseconds (default 3000: press and hold for 3 seconds)",
            );
        }
        Some(Button {
            gpio: gpio.unwrap_or(3),
            active_low: raw.active_low,
            pull: raw.pull.clone(),
            hold_ms: raw.hold_ms,
        })
    }
}
