"""vipcare: VIP customer-care automation and CRM workflow engine for telecom operators."""

__version__ = "0.1.0"
