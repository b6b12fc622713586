from kerasboost.cli import main

main()
