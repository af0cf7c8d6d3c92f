"""The app's two themes; styles.tcss refers only to theme variables ($primary, $panel, ...),
so every rule works in both."""

from __future__ import annotations

from textual.theme import Theme

DARK = Theme(
    name="memstream-dark",
    primary="#4FB3BF",
    secondary="#C792EA",
    accent="#FFCB6B",
    warning="#F78C6C",
    error="#FF5370",
    success="#C3E88D",
    foreground="#D8DEE4",
    background="#0F1419",
    surface="#151B23",
    panel="#1E2630",
    dark=True,
)

LIGHT = Theme(
    name="memstream-light",
    primary="#00707A",
    secondary="#6A3FC8",
    accent="#A35400",
    warning="#B34700",
    error="#C62828",
    success="#2E7D32",
    foreground="#1C2228",
    background="#FAFAF7",
    surface="#FFFFFF",
    panel="#E3E8EC",
    dark=False,
)

THEMES = (DARK, LIGHT)
