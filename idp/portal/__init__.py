"""The developer portal: people register and manage their own (third-party) OAuth clients."""
