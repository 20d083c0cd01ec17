from dfget.cli import main

main()
