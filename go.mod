module github.com/smtpgate/smtpgate

go 1.26.8
