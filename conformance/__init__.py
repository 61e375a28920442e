"""What the server conforms to: R4 definitions, validation and the CapabilityStatement."""
