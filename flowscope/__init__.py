"""flowscope: passive flow and TCP session tracking."""
