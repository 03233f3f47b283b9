"""Domain errors: services raise these with a stable code; the edges translate them."""


class DomainError(Exception):
    code = "domain_error"
    status = 400

    def __init__(self, message: str = "", **details):
        super().__init__(message or self.code)
        self.details = details


class InvalidCredentialsError(DomainError):
    code = "invalid_credentials"
    status = 401


class EmailTakenError(DomainError):
    code = "email_taken"
    status = 409


class InvalidEmailError(DomainError):
    code = "invalid_email"


class NotFoundError(DomainError):
    code = "not_found"
    status = 404
