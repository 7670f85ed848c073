from swehero.cli import main
main()
