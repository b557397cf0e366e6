from tesaiot_cli.cli import main

main()
