"""The FHIR RESTful API (R4 http.html): HTTP handling, handlers and the route table."""
