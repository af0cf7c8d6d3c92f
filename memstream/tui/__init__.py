"""memstream chat, the terminal app (Textual). Entry point: `memstream.tui.app.run_app(settings, user, conversation)`."""
