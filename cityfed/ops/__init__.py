"""Operations shared by both roles: certificates, TLS checks, processes, progress files."""
